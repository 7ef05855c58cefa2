"""``etl-app dlq groups|replay-group|discard-group``: dead letters grouped by cause
(etl_app.dead_letters.groups), from the command line; the same functions as the API's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
import orjson

from etl_app.cli.common import cli_entry, connect, settings_or_fail
from etl_app.cli.dead_letters import dlq_group, filter_options, parse_cli_filters, print_page, send_replayed
from etl_app.dead_letters import actions, groups
from etl_app.dead_letters.errors import InvalidParameter

SPARKS = " ▁▂▃▄▅▆▇█"


def sparkline(counts: list[int]) -> str:
    """Arrivals per hour as a line of block characters (blank: none that hour)."""
    top = max(counts, default=0)
    if not top:
        return " " * len(counts)
    return "".join(SPARKS[0] if n == 0 else SPARKS[max(1, round(n / top * (len(SPARKS) - 1)))] for n in counts)


def _moment(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cursor(value: str | None) -> tuple[int, str] | None:
    try:
        return groups.parse_cursor(value)
    except InvalidParameter as exc:
        raise click.BadParameter(str(exc)) from None


@dlq_group.command("groups")
@filter_options
@click.option("--status", default="open", show_default=True, help="open, replayed, superseded, discarded or all.")
@click.option("--limit", type=click.IntRange(1, groups.MAX_LIMIT), default=groups.DEFAULT_LIMIT, show_default=True)
@click.option("--cursor", help="The `next` cursor of the previous page.")
@click.option("--json", "as_json", is_flag=True, help="The page as JSON, as the API answers it.")
def groups_command(limit: int, cursor: str | None, as_json: bool, **filters: str | None) -> None:
    """Dead letters grouped by record type, error type and cause (the error with ids, numbers and
    quoted values as placeholders), most dead letters first."""
    settings = settings_or_fail()
    parsed = parse_cli_filters(filters)
    with connect(settings) as conn:
        page = groups.list_groups(conn, parsed, limit=limit, cursor=_cursor(cursor))
    if as_json:
        out = {"groups": page.items, "next": page.next, "limit": page.limit}
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return
    if not page.items:
        click.echo("no dead letters match")
        return
    rows = [
        (
            g["id"],
            g["record_type"],
            g["error_type"],
            g["count"],
            _moment(g["first_seen"]),
            _moment(g["last_seen"]),
            sparkline(g["arrivals"]["counts"]),
            g["sample"]["id"],
            g["cause"][:200],
        )
        for g in page.items
    ]
    columns = ("group", "type", "error type", "count", "first seen (UTC)", "last seen (UTC)", "last 24 h", "sample")
    print_page((*columns, "cause"), rows, page.next)


def _named(group: dict[str, Any]) -> str:
    return f"group {group['id']} ({group['record_type']}, {group['error_type']}: {group['cause'][:80]})"


@dlq_group.command("replay-group")
@click.argument("group")
@click.option("--limit", type=click.IntRange(1, actions.REPLAY_CAP), default=actions.REPLAY_CAP, show_default=True)
@click.option("--dry-run", is_flag=True, help="Say how many it would replay; change nothing.")
def replay_group_command(group: str, limit: int, dry_run: bool) -> None:
    """Replay the open dead letters of a GROUP (its id, from `etl-app dlq groups`)."""
    settings = settings_or_fail()
    if dry_run:
        with connect(settings) as conn:
            done = groups.replay_group(conn, group, dry_run=True, cap=limit)
        click.echo(
            f"dry run: would replay {done.count} dead letters of {_named(done.group)}; {done.remaining} would stay open"
        )
        return
    if not settings.broker_url:
        raise click.ClickException("REDIS_URL (or CELERY_BROKER_URL) is not set")
    entry = cli_entry("bulk_replay", {"group": group}, None)
    with connect(settings, audited=entry) as conn:
        done = groups.replay_group(conn, group, cap=limit)
        entry.target, entry.count = done.audit_target(), done.count
    click.echo(f"replayed {done.count} dead letters of {_named(done.group)}; {done.remaining} are still open")
    send_replayed(settings, done.replayed)


@dlq_group.command("discard-group")
@click.argument("group")
@click.option("--reason", help="Why they are discarded (required but for --dry-run; kept in the audit trail).")
@click.option("--dry-run", is_flag=True, help="Say how many it would discard; change nothing.")
def discard_group_command(group: str, reason: str | None, dry_run: bool) -> None:
    """Discard every open dead letter of a GROUP (their records stay dead)."""
    settings = settings_or_fail()
    if dry_run:
        with connect(settings) as conn:
            done = groups.discard_group(conn, group, reason, dry_run=True)
        click.echo(f"dry run: would discard {done.count} dead letters of {_named(done.group)}")
        return
    try:
        reason = groups.check_reason(reason)
    except InvalidParameter as exc:
        raise click.UsageError(f"--{exc}") from None
    entry = cli_entry("bulk_discard", {"group": group, "reason": reason}, None)
    with connect(settings, audited=entry) as conn:
        done = groups.discard_group(conn, group, reason)
        entry.target, entry.count = done.audit_target(reason=reason), done.count
    click.echo(f"discarded {done.count} dead letters of {_named(done.group)}")
