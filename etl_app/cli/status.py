"""``etl-app status``: the progress of one ingestion."""

from __future__ import annotations

import uuid

import click

from etl_app.cli.common import connect, settings_or_fail
from etl_app.quality.settle import ingestion_status


@click.command("status")
@click.argument("ingestion_id")
def status_command(ingestion_id: str) -> None:
    """Progress of one ingestion: counts by status."""
    try:
        ident = uuid.UUID(ingestion_id)
    except ValueError:
        raise click.ClickException(f"{ingestion_id!r} is not an ingestion id (a UUID)") from None
    settings = settings_or_fail()
    with connect(settings) as conn:
        report = ingestion_status(conn, ident)
    if report is None:
        raise click.ClickException(f"no ingestion {ingestion_id}")
    click.echo(f"ingestion {report['id']} ({report['record_type']}, {report['source']}): {report['status']}")
    for name, n in report["counts"].items():
        click.echo(f"  {name:<10}{n:>10}")
    click.echo(f"  created   {report['created_at'].isoformat()}")
    if report["finished_at"]:
        click.echo(f"  finished  {report['finished_at'].isoformat()}")
