"""The models and the migrations agree, and the migrations run both ways."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from etl_app import models  # noqa: F401
from etl_app.db import metadata
from etl_app.record_types import get_registry


def test_models_and_migrations_agree(engine):
    get_registry()
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
        diff = compare_metadata(ctx, metadata)
    assert diff == [], f"models and migrations differ: {diff}"


def test_every_record_type_has_its_table_with_lineage(engine):
    import sqlalchemy as sa

    inspector = sa.inspect(engine)
    tables = set(inspector.get_table_names())
    assert {"raw_records", "ingestions", "dead_letters"} <= tables
    for rt in get_registry():
        assert rt.name in tables
        columns = {c["name"] for c in inspector.get_columns(rt.name)}
        assert {"ingestion_id", "received_at", "enriched_at", "persisted_at", "schema_version", "source"} <= columns


def test_downgrade_to_base_and_back(database_url):
    """Run on a scratch database so the shared one stays at head."""
    import psycopg
    from alembic import command

    from etl_app.migrate import alembic_config

    base, name = database_url.rsplit("/", 1)
    name += "_migrations"
    scratch, admin = f"{base}/{name}", f"{base}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        cfg = alembic_config(scratch)
        command.upgrade(cfg, "heads")
        command.downgrade(cfg, "base")
        with psycopg.connect(scratch) as conn:
            left = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            ).fetchall()
        assert left == []
        command.upgrade(cfg, "heads")
        with psycopg.connect(scratch) as conn:
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'raw_records'").fetchone()[0] == 1
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
