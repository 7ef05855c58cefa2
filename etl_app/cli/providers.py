"""``etl-app providers``: the external lookup providers with their counters and circuit breakers
(as ``GET /api/v1/providers``); ``etl-app providers reset NAME`` closes NAME's breaker now,
audited ``breaker_reset`` as ``cli``."""

from __future__ import annotations

import click
import redis
from rich.markup import escape
from rich.table import Table

from etl_app.cli.common import cli_entry, connect, console, settings_or_fail
from etl_app.config import Settings
from etl_app.lookups import reset_breaker
from etl_app.lookups.registry import describe, providers


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url or settings.broker_url, socket_timeout=2, socket_connect_timeout=2)


@click.group("providers", invoke_without_command=True)
@click.pass_context
def providers_group(ctx: click.Context) -> None:
    """External lookup providers: calls, cache, errors, 429s, breaker; `reset NAME` closes a breaker."""
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_or_fail()
    client = _redis(settings)
    try:
        listed = describe(client, settings.broker_key_prefix, providers(settings))
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis did not answer: {exc}") from None
    finally:
        client.close()
    table = Table("provider", "host", "rate", "calls", "cache hit/miss", "hit ratio", "errors", "429s", "breaker")
    for p in listed:
        breaker = p["breaker"]
        state = breaker["state"]
        if state == "open":
            state += f" ({breaker['open_for_seconds']:.0f}s left)"
        elif breaker["failures"]:
            state += f" ({breaker['failures']} failures)"
        state += f", opened {breaker['opened_count']}x"
        ratio = p["cache"]["hit_ratio"]
        cells = (
            p["name"],
            p["host"] or "off",
            p["rate"] or "none",
            p["calls"]["total"],
            f"{p['cache']['hit']}/{p['cache']['miss']}",
            "" if ratio is None else f"{ratio:.1%}",
            ", ".join(f"{kind} {n}" for kind, n in p["errors"].items()),
            p["rate_limited"],
            state,
        )
        table.add_row(*(escape(str(c)) for c in cells))
    console().print(table)


@providers_group.command("reset")
@click.argument("name")
def reset_command(name: str) -> None:
    """Close the circuit breaker of provider NAME now (its opened count is kept)."""
    settings = settings_or_fail()
    known = providers(settings)
    if name not in known:
        raise click.ClickException(f"no provider {name!r}; the providers are {', '.join(known)}")
    client = _redis(settings)
    try:
        with connect(settings, audited=cli_entry("breaker_reset", {"provider": name})):
            reset_breaker(client, settings.broker_key_prefix, known[name])
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis did not answer, the breaker is unchanged: {exc}") from None
    finally:
        client.close()
    click.echo(f"{name}: breaker closed")
