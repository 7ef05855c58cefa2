"""Alembic environment: the target metadata is the service's tables plus every registered type."""

from __future__ import annotations

from alembic import context

from etl_app import models  # noqa: F401  (registers the service's own tables)
from etl_app.config import Settings
from etl_app.db import make_engine, metadata
from etl_app.record_types import get_registry

get_registry()  # registers every record type's table on the metadata
config = context.config


def _url() -> str:
    url = config.attributes.get("database_url") or Settings.from_env().database_url
    if not url:
        raise RuntimeError("DATABASE_URL is not set")
    return url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url(), pool_size=1, application_name="etl_app-migrate")
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
