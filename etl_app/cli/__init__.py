"""The operator's command line: ``etl-app run``, ``migrate``, ``ingestions``, ``dlq``, ``jobs``,
``providers``, ``waiting``, ``audit``, ``status``, ``generate`` and ``submit``."""

from __future__ import annotations

import click

from etl_app.cli import dead_letter_groups  # noqa: F401 - its commands join dlq
from etl_app.cli.audit import audit_command
from etl_app.cli.dead_letters import dlq_group
from etl_app.cli.generate import generate
from etl_app.cli.ingestions import ingestions_group
from etl_app.cli.jobs import jobs_group
from etl_app.cli.providers import providers_group
from etl_app.cli.run import migrate, run
from etl_app.cli.status import status_command
from etl_app.cli.submit import submit_command
from etl_app.cli.waiting import waiting_group


@click.group()
@click.version_option(package_name="etl_app")
def main() -> None:
    """etl_app: a Celery task-graph ETL service."""


main.add_command(run)
main.add_command(migrate)
main.add_command(generate)
main.add_command(ingestions_group, "ingestions")
main.add_command(dlq_group, "dlq")
main.add_command(jobs_group, "jobs")
main.add_command(providers_group, "providers")
main.add_command(waiting_group, "waiting")
main.add_command(audit_command)
main.add_command(status_command)
main.add_command(submit_command)


if __name__ == "__main__":  # pragma: no cover
    main()
