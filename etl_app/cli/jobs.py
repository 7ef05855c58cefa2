"""``etl-app jobs list`` and ``etl-app jobs run NAME [--from D --to D]``.

``run`` runs the job now, in this process, through the same runner as beat and the API
(:func:`etl_app.jobs.runner.run_job`): the same lock, the run recorded in job_runs with trigger
``cli``. It exits non-zero when the job failed, or was skipped because another run holds its lock.
"""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from etl_app.cli.common import connect, console, settings_or_fail
from etl_app.jobs.registry import JOBS, BadWindow, UnknownJob, get_job, window_from
from etl_app.jobs.runner import recent_runs, run_job
from etl_app.models import SUCCEEDED
from etl_app.runtime.build import build_runtime


@click.group("jobs")
def jobs_group() -> None:
    """The scheduled jobs: list them with their last run, run one now."""


@jobs_group.command("list")
def list_jobs() -> None:
    """Each job with its schedule (UTC) and its last run."""
    settings = settings_or_fail()
    with connect(settings) as conn:
        last = recent_runs(conn, list(JOBS), per_job=1)
    table = Table("job", "schedule", "last run", "status", "rows", "window", "error")
    for job in JOBS.values():
        runs = last[job.name]
        if runs:
            run = runs[0]
            window = run["window"]
            table.add_row(
                job.name,
                job.schedule,
                run["started_at"].isoformat(timespec="seconds"),
                run["status"],
                "" if run["rows"] is None else str(run["rows"]),
                window["from"] if window["from"] == window["to"] else f"{window['from']}..{window['to']}",
                escape((run["error"] or "")[:80]),
            )
        else:
            table.add_row(job.name, job.schedule, "never", "", "", "", "")
    console().print(table)


@jobs_group.command("run")
@click.argument("name")
@click.option("--from", "start", metavar="YYYY-MM-DD", help="first day of the window (UTC)")
@click.option("--to", "end", metavar="YYYY-MM-DD", help="last day of the window, inclusive (default: today)")
def run_command(name: str, start: str | None, end: str | None) -> None:
    """Run the job NAME now, under its lock; prints the run's outcome."""
    try:
        window = window_from(get_job(name), start, end)
    except (UnknownJob, BadWindow) as exc:
        raise click.ClickException(str(exc.args[0])) from None
    settings = settings_or_fail()
    runtime = build_runtime(settings, application_name="etl_app-cli", pool_size=2, max_overflow=0, with_relay=False)
    try:
        outcome = run_job(runtime.engine, name, window, "cli", settings=runtime.settings, tools=runtime.job_tools)
    finally:
        runtime.engine.dispose()
    days = outcome.window.start.isoformat()
    if outcome.window.days > 1:
        days += f"..{outcome.window.end.isoformat()}"
    run = f"run {outcome.run_id}" if outcome.run_id is not None else "run (not recorded)"
    click.echo(
        f"{name} {run} ({days}): {outcome.status}" + (f", {outcome.rows} rows" if outcome.rows is not None else "")
    )
    if outcome.status != SUCCEEDED:
        raise click.ClickException(outcome.error or outcome.status)
