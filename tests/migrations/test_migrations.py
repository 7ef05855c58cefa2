"""The models and the migrations agree, and the migrations run both ways."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from etl_app import models  # noqa: F401
from etl_app.db import metadata
from etl_app.record_types import get_registry

from tests.helpers.support import RUN_ID, fresh_database


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


def test_downgrade_to_base_and_back():
    """Run on a scratch database so the shared one stays at head."""
    import psycopg
    from alembic import command

    from etl_app.migrate import alembic_config

    with fresh_database(f"{RUN_ID}_migrations", migrate=False) as scratch:
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


def test_0021_builds_again_an_index_a_stopped_run_left_invalid():
    """0021 builds its indexes CONCURRENTLY, outside a transaction: a run stopped part-way leaves
    an invalid index of the name, which the next run drops and builds again (not kept as it is)."""
    import psycopg
    from alembic import command

    from etl_app.migrate import alembic_config

    with fresh_database(f"{RUN_ID}_migrations_0021", migrate=False) as scratch:
        cfg = alembic_config(scratch)
        command.upgrade(cfg, "0020")
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload) "
                "SELECT gen_random_uuid(), 'sessions', 'k-' || n, '{}' FROM generate_series(1, 3) AS n"
            )
            # a unique build over duplicates fails and leaves its index invalid
            try:
                conn.execute("CREATE UNIQUE INDEX CONCURRENTLY ix_raw_records_natural_key ON raw_records (record_type)")
            except psycopg.errors.UniqueViolation:
                pass
            left = conn.execute(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = 'ix_raw_records_natural_key'"
            ).fetchall()
            assert left == [(False,)]
        command.upgrade(cfg, "heads")
        with psycopg.connect(scratch) as conn:
            built = conn.execute(
                "SELECT c.relname, am.amname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_am am ON am.oid = c.relam WHERE c.relname LIKE 'ix_raw_records_%' "
                "AND (c.relname LIKE '%natural_key' OR c.relname LIKE '%received_at') ORDER BY 1"
            ).fetchall()
        assert built == [("ix_raw_records_natural_key", "hash", True), ("ix_raw_records_received_at", "brin", True)]
