"""What the operator commands share: settings, a short-lived connection (audited for the actions of
the audit trail: the command line acts as ``cli``, with admin rights), rich output."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import click
import sqlalchemy as sa
from rich.console import Console

from etl_app import audit
from etl_app.config import Settings, embedded_env_path
from etl_app.db import make_engine
from etl_app.dead_letters.errors import DeadLetterError, InvalidPayload
from etl_app.roles import CLI_ACTOR


def settings_or_fail() -> Settings:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if not settings.database_url:
        raise click.ClickException(
            f"DATABASE_URL is not set, nor found in {embedded_env_path()} (which `etl-app run` writes while it runs "
            "embedded servers; set ETL_VAR_DIR to the folder it keeps its files in)"
        )
    return settings


def cli_entry(action: str, target: dict[str, Any], count: int | None = 1) -> audit.Entry:
    """An audit entry of the command line for ``action`` on ``target``."""
    return audit.Entry(CLI_ACTOR, action, target, count)


@contextmanager
def connect(settings: Settings, *, write: bool = False, audited: audit.Entry | None = None) -> Iterator[sa.Connection]:
    """A connection; ``write``: in a transaction committed at the end; ``audited``: that, and the
    entry written in it (or written ``failed`` if the action fails; etl_app.audit.audited)."""
    engine = make_engine(
        settings.database_url,
        pool_size=1,
        max_overflow=0,
        application_name="etl_app-cli",
        keepalive_seconds=settings.db_keepalive_seconds,
    )
    try:
        opened: AbstractContextManager[sa.Connection]
        if audited is not None:
            opened = audit.audited(engine, audited)
        else:
            opened = engine.begin() if write else engine.connect()
        with opened as conn:
            yield conn
    except InvalidPayload as exc:
        lines = [f"  {name}: {' '.join(msgs)}" for name, msgs in exc.errors.items()]
        raise click.ClickException("\n".join([str(exc) + "; nothing was changed:", *lines])) from None
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


def console() -> Console:
    """Rich output; as wide as the terminal, or 200 columns when piped (for grep and files)."""
    console = Console()
    return console if console.is_terminal else Console(width=200)
