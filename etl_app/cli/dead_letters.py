"""``etl-app dlq list|show|replay|discard``: the dead letters, from the command line.

Settings come from the environment (DATABASE_URL; REDIS_URL or CELERY_BROKER_URL to replay),
as for the service. Errors (not found, not open, invalid payload) exit with status 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC
from typing import Any

import click
import orjson
from rich.json import JSON
from rich.markup import escape
from rich.table import Table

from etl_app.cli.common import cli_entry, connect, console, settings_or_fail
from etl_app.config import Settings
from etl_app.dead_letters import actions, edits, queries
from etl_app.dead_letters.errors import FilterRequired, InvalidParameter
from etl_app.dead_letters.filters import Filters, parse_filters, require_filter
from etl_app.record_types import get_registry
from etl_app.roles import CLI_ACTOR
from etl_app.runtime.build import build_runtime


def send_replayed(settings: Settings, replayed: actions.Replayed) -> None:
    """After the commit, like the API; with no relay here, what the broker does not take now is
    left to the outbox sweeper."""
    runtime = build_runtime(settings, application_name="etl_app-cli", pool_size=1, max_overflow=0, with_relay=False)
    try:
        sent = actions.send_replayed(runtime.publisher, replayed)
    finally:
        runtime.engine.dispose()
    if not sent:
        click.echo("warning: the broker did not take them now; the outbox sweeper will send them", err=True)


def parse_cli_filters(options: dict[str, Any]) -> Filters:
    """The filters of the options given, or a usage error naming the bad one."""
    try:
        return parse_filters(options, get_registry().names())
    except InvalidParameter as exc:
        raise click.BadParameter(str(exc)) from None


FILTER_HELP = {
    "record-type": "Only this record type (tutors, ...).",
    "error-type": "Only this error type (validation, missing_parent, ...).",
    "ingestion-id": "Only records of this ingestion.",
    "since": "Only dead letters that last failed at or after this ISO 8601 moment.",
}


def filter_options(func):
    for name, text in reversed(FILTER_HELP.items()):
        func = click.option(f"--{name}", help=text)(func)
    return func


def superseded_by(d: dict[str, Any], *, ingestion: bool = True) -> str:
    """Which stored record kept the key of a superseded dead letter ("" for any other)."""
    by = d["superseded_by"]
    if by is None:
        return ""
    raw = f"raw record {by['raw_record_id']}" if by["raw_record_id"] is not None else "a record"
    return f"{raw} of ingestion {by['ingestion_id']}" if ingestion or by["raw_record_id"] is None else raw


def print_page(columns: Sequence[str], rows: Iterable[Sequence[Any]], next_cursor: str | None) -> None:
    """A page as a table (the last column folds, the others do not wrap), and how to get the next."""
    table = Table()
    for name in columns[:-1]:
        table.add_column(name, no_wrap=True)
    table.add_column(columns[-1], overflow="fold", min_width=30)
    for cells in rows:
        table.add_row(*(escape(str(c)) for c in cells))
    console().print(table)
    if next_cursor:
        click.echo(f"more: --cursor {next_cursor}")


@click.group()
def dlq_group() -> None:
    """Inspect, replay and discard dead letters."""


@dlq_group.command("list")
@filter_options
@click.option("--status", default="open", show_default=True, help="open, replayed, superseded, discarded or all.")
@click.option("--limit", type=click.IntRange(1, queries.MAX_LIMIT), default=queries.DEFAULT_LIMIT, show_default=True)
@click.option("--cursor", type=click.IntRange(min=1), help="The `next` cursor of the previous page.")
def list_command(limit: int, cursor: int | None, **filters: str | None) -> None:
    """List dead letters, newest first (--since is ISO 8601, on the last failure)."""
    settings = settings_or_fail()
    parsed = parse_cli_filters(filters)
    with connect(settings) as conn:
        page = queries.list_dead_letters(conn, parsed, limit=limit, cursor=cursor)
    if not page.items:
        click.echo("no dead letters match")
        return
    rows = [
        (
            d["id"],
            d["record_type"],
            d["natural_key"] or "",
            d["error_type"],
            f"superseded by {superseded_by(d, ingestion=False)}" if d["superseded_by"] else d["status"],
            d["record_status"] or "",
            d["replay_count"],
            d["last_failed_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            (d["error"] or "")[:200],
        )
        for d in page.items
    ]
    columns = ("id", "type", "key", "error type", "status", "record", "replays", "last failed (UTC)", "error")
    print_page(columns, rows, page.next)


@dlq_group.command("show")
@click.argument("dead_letter_id", type=int)
@click.option("--full", is_flag=True, help="The whole traceback (default: its last 20 lines).")
def show_command(dead_letter_id: int, full: bool) -> None:
    """One dead letter: payload, error and traceback."""
    settings = settings_or_fail()
    with connect(settings) as conn:
        d = queries.get_dead_letter(conn, dead_letter_id, None if full else queries.TRACEBACK_LINES)
    if d is None:
        raise click.ClickException(f"no dead letter {dead_letter_id}")
    out = console()

    def field(name: str, value: Any) -> None:
        out.print(f"[bold]{name}[/bold]: {escape(str(value))}", highlight=False)

    for name in ("id", "record_type", "natural_key", "ingestion_id", "raw_record_id", "record_status", "status"):
        field(name, d[name])
    if d["superseded_by"]:
        field(
            "superseded_by",
            f"{superseded_by(d)}: the replayed record did not land, this later one of its key is stored",
        )
    for name in ("error_type", "task_name", "attempts", "replay_count", "last_outcome"):
        field(name, d[name] if d[name] is not None else "-")
    for name in ("first_failed_at", "last_failed_at", "last_replayed_at"):
        field(name, d[name].isoformat() if d[name] else "-")
    field("error", d["error"])
    out.print("[bold]payload[/bold]:")
    out.print(JSON(orjson.dumps(d["payload"]).decode()))
    if d["traceback"]:
        out.print("[bold]traceback[/bold]" + (" (last lines)" if d["traceback_truncated"] else "") + ":")
        out.print(d["traceback"], markup=False, highlight=False)


@dlq_group.command("replay")
@click.argument("dead_letter_id", type=int, required=False)
@click.option("--payload-file", type=click.File("rb"), help="A corrected payload (JSON object; - for stdin).")
@click.option("--all", "replay_all", is_flag=True, help="Every open dead letter matching the filters.")
@filter_options
@click.option("--limit", type=click.IntRange(1, actions.REPLAY_CAP), default=actions.REPLAY_CAP, show_default=True)
@click.option("--dry-run", is_flag=True, help="With --all: say how many it would replay; change nothing.")
def replay_command(
    dead_letter_id: int | None, payload_file, replay_all: bool, limit: int, dry_run: bool, **filters: str | None
):
    """Replay one dead letter (ID), optionally corrected, or --all matching the filters (an empty
    filter value is refused)."""
    if (dead_letter_id is None) == (not replay_all):
        raise click.UsageError("give a dead letter ID or --all")
    given = {k: v for k, v in filters.items() if v is not None}
    if dead_letter_id is not None and given:
        raise click.UsageError("filters go with --all")
    if replay_all and payload_file is not None:
        raise click.UsageError("--payload-file goes with one dead letter ID")
    if dry_run and not replay_all:
        raise click.UsageError("--dry-run goes with --all")
    if replay_all:
        try:
            require_filter(given, everything=True)
        except FilterRequired as exc:
            name = (exc.name or "").replace("_", "-")
            raise click.UsageError(f"--{name} is empty: give it a value or leave it out") from None
    settings = settings_or_fail()
    if dry_run:
        with connect(settings) as conn:
            would, remaining = actions.count_replayable(conn, parse_cli_filters(given), cap=limit)
        click.echo(f"dry run: would replay {would} dead letters; {remaining} matching ones would stay open")
        return
    if not settings.broker_url:
        raise click.ClickException("REDIS_URL (or CELERY_BROKER_URL) is not set")
    if dead_letter_id is not None:
        payload = actions.UNSET
        if payload_file is not None:
            try:
                payload = orjson.loads(payload_file.read())
            except orjson.JSONDecodeError as exc:
                raise click.ClickException(f"the payload file is not valid JSON: {exc}") from None
        action = "replay" if payload is actions.UNSET else "edit"
        with connect(settings, audited=cli_entry(action, {"dead_letter_id": dead_letter_id})) as conn:
            if payload is actions.UNSET:
                replayed = actions.replay(conn, get_registry(), dead_letter_id)
            else:  # kept in dead_letter_edits, as the API's and the page's edits are
                replayed = edits.edit_and_replay(
                    conn, get_registry(), dead_letter_id, payload, key_id=CLI_ACTOR, may_submit=True
                )
        click.echo(
            f"replayed dead letter {dead_letter_id} (raw record {replayed.raw_ids[0]}); once it settles, "
            f"`etl-app dlq show {dead_letter_id}` says whether it landed"
        )
    else:
        parsed = parse_cli_filters(given)
        entry = cli_entry("bulk_replay", {"filters": {**given, "limit": limit}}, None)
        with connect(settings, audited=entry) as conn:
            replayed, remaining = actions.replay_matching(conn, parsed, cap=limit)
            entry.count = replayed.count
        click.echo(f"replayed {replayed.count} dead letters; {remaining} matching ones are still open")
    send_replayed(settings, replayed)


@dlq_group.command("discard")
@click.argument("dead_letter_id", type=int)
def discard_command(dead_letter_id: int) -> None:
    """Close a dead letter without replaying it (its record stays dead)."""
    settings = settings_or_fail()
    with connect(settings, audited=cli_entry("discard", {"dead_letter_id": dead_letter_id})) as conn:
        actions.discard(conn, dead_letter_id)
    click.echo(f"discarded dead letter {dead_letter_id}")
