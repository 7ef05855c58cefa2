"""``etl-app status``: the progress of one ingestion (``etl-app ingestions show`` tells more)."""

from __future__ import annotations

import click

from etl_app.cli.ingestions import find_ingestion


@click.command("status")
@click.argument("ingestion_id")
def status_command(ingestion_id: str) -> None:
    """Progress of one ingestion: counts by status."""
    report = find_ingestion(ingestion_id)
    click.echo(f"ingestion {report['id']} ({report['record_type']}, {report['source']}): {report['status']}")
    for name, n in report["counts"].items():
        click.echo(f"  {name:<10}{n:>10}")
    click.echo(f"  created   {report['created_at'].isoformat()}")
    if report["finished_at"]:
        click.echo(f"  finished  {report['finished_at'].isoformat()}")
