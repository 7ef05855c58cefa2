"""``etl-app ingestions list|show``: the ingestions, newest first, and one ingestion, from the
command line; the same query as the Ingestions page and ``GET /api/v1/ingestions``
(:mod:`etl_app.ingest.listing`), each ingestion as ``GET /api/v1/ingestions/{id}`` shows it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.markup import escape
from rich.table import Table

from etl_app.cli.common import connect, console, settings_or_fail
from etl_app.dead_letters.filters import parse_moment
from etl_app.ingest import listing
from etl_app.jsonsafe import json_safe
from etl_app.quality.settle import ingestion_status
from etl_app.record_types import get_registry


def _moment(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _json(value: Any) -> str:
    return orjson.dumps(json_safe(value), option=orjson.OPT_INDENT_2).decode()


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def find_ingestion(ingestion_id: str) -> dict[str, Any]:
    """The ingestion as ``GET /api/v1/ingestions/{id}`` shows it; exit 1 for a bad or unknown id."""
    try:
        ident = uuid.UUID(ingestion_id)
    except ValueError:
        raise click.ClickException(f"{ingestion_id!r} is not an ingestion id (a UUID)") from None
    settings = settings_or_fail()
    with connect(settings) as conn:
        report = ingestion_status(conn, ident)
    if report is None:
        raise click.ClickException(f"no ingestion {ingestion_id}")
    return report


@click.group("ingestions")
def ingestions_group() -> None:
    """List ingestions and show one: counts, quality, upload."""


@ingestions_group.command("list")
@click.option("--record-type", help="Only this record type (tutors, ...).")
@click.option("--status", type=click.Choice(listing.STATUSES), help="Only ingestions of this status.")
@click.option("--since", help="Only ingestions created at or after this ISO 8601 moment (naive means UTC).")
@click.option("--limit", type=click.IntRange(1, listing.MAX_LIMIT), default=listing.DEFAULT_LIMIT, show_default=True)
@click.option("--cursor", help="The `next` cursor of the previous page.")
@click.option("--json", "as_json", is_flag=True, help="The page as JSON, as the API answers it.")
def list_command(
    record_type: str | None, status: str | None, since: str | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    """Ingestions, newest first, with their counts and quality level."""
    names = get_registry().names()
    if record_type is not None and record_type not in names:
        raise click.BadParameter(f"must be one of {', '.join(names)}", param_hint="--record-type")
    moment = None
    if since is not None:
        try:
            moment = parse_moment(since)
        except ValueError:
            raise click.BadParameter("must be an ISO 8601 moment", param_hint="--since") from None
    settings = settings_or_fail()
    with connect(settings) as conn:
        try:
            listed = listing.list_ingestions(
                conn, record_type=record_type, status=status, since=moment, cursor=cursor, limit=limit
            )
        except listing.BadCursor:
            raise click.BadParameter("pass back the `next` cursor of a page", param_hint="--cursor") from None
        reports = [r for r in (ingestion_status(conn, ident) for ident in listed.ids) if r is not None]
    if as_json:
        click.echo(_json({"ingestions": reports, "next": listed.next, "limit": limit}))
        return
    if not reports:
        click.echo("no ingestions match")
        return
    table = Table()
    columns = ("id", "type", "source", "status", "received", "persisted", "in flight", "dead", "rejected", "quality")
    for name in (*columns, "created (UTC)"):
        table.add_column(name, no_wrap=True)
    for r in reports:
        counts, quality = r["counts"], r["quality"]
        cells = (
            r["id"],
            r["record_type"],
            r["source"],
            r["status"],
            *(counts[name] for name in ("received", "persisted", "in_flight", "dead", "rejected")),
            quality["level"] if quality else "",
            _moment(r["created_at"]),
        )
        table.add_row(*(escape(str(c)) for c in cells))
    console().print(table)
    if listed.next:
        click.echo(f"more: --cursor {listed.next}")


@ingestions_group.command("show")
@click.argument("ingestion_id")
@click.option("--json", "as_json", is_flag=True, help="The ingestion as JSON, as the API answers it.")
def show_command(ingestion_id: str, as_json: bool) -> None:
    """One ingestion: counts by status, upload, quality and its most frequent errors."""
    report = find_ingestion(ingestion_id)
    if as_json:
        click.echo(_json(report))
        return
    out = console()
    out.print(escape(f"ingestion {report['id']} ({report['record_type']}, {report['source']}): {report['status']}"))
    out.print(f"  created   {_moment(report['created_at'])} UTC")
    if report["finished_at"]:
        out.print(f"  finished  {_moment(report['finished_at'])} UTC")
    upload = report["upload"]
    if upload:
        line = f"{upload['filename']} ({upload['format']}, {upload['size']:,} bytes): {upload['status']}"
        out.print("  upload    " + escape(line + (f", {upload['error']}" if upload["error"] else "")))
    table = Table(title="counts")
    table.add_column("status")
    table.add_column("records", justify="right")
    for name, n in report["counts"].items():
        table.add_row(name, f"{n:,}")
    out.print(table)
    quality = report["quality"]
    if not quality:
        return
    out.print(
        f"quality: score {_share(quality['score'])} ({quality['level']}), validity {_share(quality['validity'])}, "
        f"uniqueness {_share(quality['uniqueness'])}, integrity {_share(quality['integrity'])}"
    )
    for e in quality.get("top_errors") or []:
        out.print(escape(f"  {e['count']:>8,}  {e['field']}: {e['message']}"))
