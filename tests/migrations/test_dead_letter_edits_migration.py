"""Migration 0015: dead_letter_edits and the group index appear (and go on downgrade), and the
dead letters written before it get the cause of this version's normaliser (the key of a
``<record type>:<key>`` reference as ``<key>``), which moves them into one group."""

from __future__ import annotations

import uuid

import psycopg
from alembic import command

from etl_app.migrate import alembic_config

from tests.helpers.support import RUN_ID, fresh_database

INSERT = (
    "INSERT INTO dead_letters (raw_record_id, ingestion_id, record_type, payload, error_type, error, cause) "
    "VALUES (%s, %s, 'sessions', '{}', 'missing_parent', %s, %s)"
)


def test_0015_refreshes_the_causes_of_missing_parents_and_adds_the_edits_table():
    with fresh_database(f"{RUN_ID}_m15", migrate=False) as url:
        cfg = alembic_config(url)
        command.upgrade(cfg, "0014")
        with psycopg.connect(url) as conn:
            for n, name in enumerate(("alice", "bob")):
                error = f"parent tutors:{name} not found after waiting 8s"
                conn.execute(INSERT, (n + 1, uuid.uuid4(), error, error.replace("8s", "<n>s")))
            conn.execute(INSERT, (3, uuid.uuid4(), "it broke: no", "it broke: no"))
        command.upgrade(cfg, "0015")
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT cause, group_key FROM dead_letters ORDER BY raw_record_id").fetchall()
            assert [r[0] for r in rows] == ["parent tutors:<key> not found after waiting <n>s"] * 2 + ["it broke: no"]
            assert rows[0][1] == rows[1][1] != rows[2][1]
            assert conn.execute("SELECT to_regclass('dead_letter_edits')").fetchone()[0] == "dead_letter_edits"
        command.downgrade(cfg, "0014")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('dead_letter_edits')").fetchone()[0] is None
            index = conn.execute("SELECT to_regclass('ix_dead_letters_group_key_status_id')").fetchone()[0]
            assert index is None
