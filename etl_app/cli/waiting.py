"""``etl-app waiting list|give-up``: records waiting for their parents, from the command line.

Settings come from the environment (DATABASE_URL), as for the service. ``give-up`` is audited
``give_up`` as ``cli``; a bad selector exits with status 2 (usage), nothing changed.
"""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from etl_app.cli.common import cli_entry, connect, console, settings_or_fail
from etl_app.dead_letters import waiting
from etl_app.dead_letters.errors import DeadLetterError, InvalidParameter
from etl_app.record_types import get_registry
from etl_app.roles import CLI_ACTOR


@click.group()
def waiting_group() -> None:
    """Records waiting for their parents: list them, give up on them now."""


@waiting_group.command("list")
@click.option("--ingestion", "ingestion_id", help="Only this ingestion.")
def list_command(ingestion_id: str | None) -> None:
    """Records waiting for a parent now, by ingestion and record type (most first)."""
    ident = None
    if ingestion_id is not None:
        try:
            ident = waiting.parse_ingestion_id(ingestion_id)
        except InvalidParameter:
            raise click.BadParameter("not an ingestion id (a UUID)", param_hint="--ingestion") from None
    settings = settings_or_fail()
    with connect(settings) as conn:
        found = waiting.list_waiting(conn, ingestion_id=ident)
    table = Table()
    for name in ("ingestion", "type", "waiting", "parents", "waiting since (UTC)"):
        table.add_column(name, no_wrap=True)
    for g in found["groups"]:
        since = g["waiting_since"].strftime("%Y-%m-%d %H:%M:%S") if g["waiting_since"] else ""
        cells = (g["ingestion_id"], g["record_type"], g["waiting"], g["parents"], since)
        table.add_row(*(escape(str(c)) for c in cells))
    console().print(table)
    more = f" (the {waiting.MAX_GROUPS} largest groups shown)" if found["more"] else ""
    click.echo(f"{found['total']} records waiting for their parents{more}")


@waiting_group.command("give-up")
@click.option("--ingestion", "ingestion_id", help="Every waiting record of this ingestion.")
@click.option("--type", "record_type", help="Every waiting record of this record type.")
@click.option("--record", help="One waiting record, as TYPE:KEY.")
def give_up_command(ingestion_id: str | None, record_type: str | None, record: str | None) -> None:
    """Dead-letter waiting records as missing_parent now (at most 10,000 a call); exactly one of
    --ingestion, --type and --record. They are not replayed by themselves if the parent lands."""
    selector = _selector({"ingestion_id": ingestion_id, "record_type": record_type, "record": record})
    settings = settings_or_fail()
    entry = cli_entry("give_up", selector.describe(), None)
    with connect(settings, audited=entry) as conn:
        given = waiting.give_up(conn, selector, who=CLI_ACTOR)
        entry.count = given.count
    with connect(settings) as conn:
        waiting.settle_given_up(conn, get_registry(), settings, given)
    more = f"; {given.remaining} more still wait: run it again" if given.remaining else ""
    click.echo(f"gave up on {given.count} waiting records (dead letters missing_parent){more}")


OPTIONS = {"ingestion_id": "--ingestion", "record_type": "--type", "record": "--record"}


def _selector(params: dict[str, str | None]) -> waiting.Selector:
    """The selector of the options given, or a usage error naming the bad one."""
    given = {name: value for name, value in params.items() if value is not None}
    try:
        return waiting.parse_selector(given, get_registry().names(), record_text=True)
    except InvalidParameter as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[1], param_hint=OPTIONS[exc.name]) from None
    except DeadLetterError:
        raise click.UsageError(f"give exactly one of {', '.join(OPTIONS.values())}") from None
