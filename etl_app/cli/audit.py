"""``etl-app audit``: the audit trail (etl_app.audit), newest first."""

from __future__ import annotations

from datetime import UTC

import click
import orjson
from rich.markup import escape
from rich.table import Table

from etl_app import audit
from etl_app.cli.common import connect, console, settings_or_fail


@click.command("audit")
@click.option("--limit", type=click.IntRange(1, audit.MAX_LIMIT), default=audit.DEFAULT_LIMIT, show_default=True)
@click.option("--action", type=click.Choice(audit.ACTIONS), help="Only this action.")
@click.option("--key-id", help="Only this key id (or cli, beat).")
def audit_command(limit: int, action: str | None, key_id: str | None) -> None:
    """Who replayed, discarded or edited dead letters and ran jobs: newest first."""
    settings = settings_or_fail()
    with connect(settings) as conn:
        page = audit.list_entries(conn, action=action, key_id=key_id, limit=limit)
    if not page.items:
        click.echo("no audit entries match")
        return
    table = Table()
    for name in ("id", "at (UTC)", "key id", "action", "count", "outcome", "times"):
        table.add_column(name, no_wrap=True)
    table.add_column("target", overflow="fold", min_width=20)
    table.add_column("message", overflow="fold", min_width=20)
    for e in page.items:
        cells = (
            e["id"],
            e["at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            e["key_id"],
            e["action"],
            "" if e["count"] is None else e["count"],
            e["outcome"],
            e["occurrences"],
            orjson.dumps(e["target"]).decode(),
            e["message"] or "",
        )
        table.add_row(*(escape(str(c)) for c in cells))
    console().print(table)
