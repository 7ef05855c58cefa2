"""Dead letters made through the real pipeline functions, and rows to assert on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl_app.clock import utcnow
from etl_app.dead_letters.store import Failure, dead_letter
from etl_app.ingest import outbox
from etl_app.pipeline.enrich import enrich_chunk, fetch_parents, mark_waiting
from etl_app.pipeline.persist import persist_chunk
from etl_app.pipeline.stash import Stash
from etl_app.pipeline.validate import load_raw, validate_chunk
from etl_app.record_types import get_registry


def store(
    engine: sa.Engine, record_type: str, payloads: Sequence[dict[str, Any]], received_at: datetime | None = None
) -> outbox.Accepted:
    """Accepted records in raw_records, as the API stores them (received now, unless told)."""
    with engine.begin() as conn:
        return outbox.store(
            conn,
            get_registry()[record_type],
            payloads,
            source="api",
            received_at=received_at or utcnow(),
            rejections=[],
        )


def bury(
    engine: sa.Engine,
    raw_ids: Sequence[int],
    error_type: str = "validation",
    error: str = "it broke",
    traceback: str | None = None,
    waiting_on: str | None = None,
    task_name: str = "etl.validate",
) -> list[int]:
    """Dead-letter these raw records; returns their dead letter ids."""
    failures = [Failure(i, error_type, error, traceback, waiting_on) for i in raw_ids]
    with engine.begin() as conn:
        dead_letter(conn, failures, task_name)
        return list(
            conn.execute(
                sa.text("SELECT id FROM dead_letters WHERE raw_record_id = ANY(:ids) ORDER BY raw_record_id"),
                {"ids": list(raw_ids)},
            ).scalars()
        )


def dead(engine: sa.Engine, record_type: str, payloads: Sequence[dict[str, Any]], **kwargs: Any):
    """Store and dead-letter: ``(accepted, dead letter ids)``."""
    accepted = store(engine, record_type, payloads)
    return accepted, bury(engine, accepted.ids, **kwargs)


def enriched_chunk(
    engine: sa.Engine, record_type: str, raw_ids: Sequence[int], stash: Stash | None = None
) -> dict[str, Any]:
    """What etl.enrich hands to etl.persist for these records (their parents must be stored): with
    a ``stash``, the message; ``items`` holds the values, for calling persist_chunk directly."""
    registry = get_registry()
    rt = registry[record_type]
    with engine.connect() as conn:
        items, failures = validate_chunk(rt, load_raw(conn, raw_ids))
        parents = fetch_parents(conn, rt, registry, items)
    done, waiting, more = enrich_chunk(rt, items, parents)
    assert not failures and not waiting and not more, (failures, waiting, more)
    chunk = {"type": record_type, "ids": [item["id"] for item in done], "items": done}
    if stash is not None:
        chunk["stash"] = stash.put(done)
    return chunk


def land(engine: sa.Engine, record_type: str, payloads: Sequence[dict[str, Any]]) -> outbox.Accepted:
    """Store and persist through the pipeline functions (no worker)."""
    accepted = store(engine, record_type, payloads)
    chunk = enriched_chunk(engine, record_type, accepted.ids)
    with engine.begin() as conn:
        persist_chunk(conn, get_registry()[record_type], chunk["items"])
    return accepted


def dead_letter_row(engine: sa.Engine, dead_letter_id: int) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM dead_letters WHERE id = :id"), {"id": dead_letter_id}).one()


def raw_row(engine: sa.Engine, raw_id: int) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM raw_records WHERE id = :id"), {"id": raw_id}).one()


def make_wait(engine: sa.Engine, record_type: str, raw_ids: Sequence[int]) -> None:
    """What etl.enrich does with children whose parent is missing: they wait (no worker here)."""
    registry = get_registry()
    rt = registry[record_type]
    with engine.begin() as conn:
        items, failures = validate_chunk(rt, load_raw(conn, raw_ids))
        done, waits, more = enrich_chunk(rt, items, fetch_parents(conn, rt, registry, items))
        assert not (failures or done or more) and len(waits) == len(raw_ids)
        mark_waiting(conn, waits, utcnow())
