"""The statements that pick a chunk's raw records by id find them by the primary key, and the
check that an ingestion has nothing in flight by the (ingestion_id, status) index, never by
walking the partial index of unsettled records, even when the statistics say nothing is unsettled
and a backlog has built up since (a large table's usual state): the walk tested every record of
the backlog (etl_app.ingest.tables.unsettled_by_id)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import sqlalchemy as sa

from etl_app.dead_letters import store
from etl_app.ingest import claim, listing, send
from etl_app.models import json_list
from etl_app.pipeline import persist, validate
from etl_app.quality import settle
from etl_app.record_types import get_registry

from tests.helpers.plans import json_plan

BACKLOG = 3_000


def _plan(conn: sa.Connection, statement: sa.TextClause, params: dict[str, Any]) -> str:
    return json_plan(conn, statement.text, params)


def _failures(ids: list[int]) -> dict[str, Any]:
    n = len(ids)
    return {"ids": ids, "types": ["validation"] * n, "errs": ["e"] * n, "tbs": [None] * n, "waits": [None] * n,
            "causes": ["c"] * n, "task_name": "t"}  # fmt: skip


def test_a_chunk_is_found_by_its_ids_whatever_the_backlog_and_the_statistics_say(engine):
    rt = get_registry()["students"]
    with engine.connect() as conn, conn.begin() as tx:
        conn.execute(sa.text("ANALYZE raw_records"))  # before the backlog: the statistics do not know it
        ingestion = uuid.uuid4()
        ids = conn.execute(
            sa.text(
                "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, received_at, enqueued_at) "
                "SELECT :ing, 'students', 'plan-' || n, '{}', now(), now() FROM generate_series(1, :n) AS n "
                "RETURNING id"
            ),
            {"ing": ingestion, "n": BACKLOG},
        ).scalars()
        chunk = sorted(ids)[:100]
        rows = orjson.dumps([{"student_id": f"plan-{i}", "name": "n", "raw_record_id": i} for i in chunk]).decode()
        plans = {
            "validate": _plan(conn, validate._LOAD, {"ids": json_list(chunk)}),
            "persist": _plan(conn, persist._upsert(rt), {"values": rows, "schema_version": rt.schema_version}),
            "lease": _plan(conn, claim._REFRESH, {"ids": chunk, "ahead": 0}),
            "unpublished": _plan(conn, send._FLAG_UNPUBLISHED, {"ids": chunk}),
            "dead letter": _plan(conn, store._DEAD_LETTER, _failures(chunk)),
            "settled ingestions": _plan(conn, settle._BY_INGESTION, {"ids": [ingestion]}),
        }
        listed = sa.select(listing.INGESTIONS.c.id).where(listing._settled())
        plans["ingestions list"] = _plan(conn, sa.text(str(listed.compile(compile_kwargs={"literal_binds": True}))), {})
        tx.rollback()
    for stage, plan in plans.items():
        assert "ix_raw_records_unsettled" not in plan, stage
    # by the key; the joins (dead letters, ingestions) may read a table of the tests' size whole
    for stage in ("validate", "persist", "lease", "unpublished"):
        assert "pk_raw_records" in plans[stage], stage
