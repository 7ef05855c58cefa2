"""The naive baseline's own Celery app: one chain of three tasks per record, one upsert per
transaction (``celery -A bench.naive_tasks worker -Q bench_naive``).

validate → enrich → persist, each loading the payload with the record type's schema again;
enrich looks up each parent with its own query (a missing one is retried every second);
persist upserts the one row through SQLAlchemy in its own transaction. Delivery settings are
the product's original ones (JSON, late acks, prefetch 1, no results). It uses the record
types' schemas, derive functions and tables, nothing of etl_app's pipeline.

Environment: BENCH_DATABASE_URL (or DATABASE_URL), BENCH_REDIS_URL (or REDIS_URL).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from celery import Celery, chain
from sqlalchemy.dialects.postgresql import insert

from etl_app.db import make_engine
from etl_app.record_types import RecordType, get_registry

QUEUE = "bench_naive"

app = Celery("bench_naive", set_as_current=False)
app.conf.update(
    broker_url=os.environ.get("BENCH_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/12",
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_state: dict[str, Any] = {"url": None, "engine": None}


def configure(database_url: str | None = None, broker_url: str | None = None) -> None:
    """Point the tasks at a database (and the app at a broker); the engine is made on first use."""
    if database_url is not None:
        if _state["engine"] is not None:
            _state["engine"].dispose()
        _state.update(url=database_url, engine=None)
    if broker_url is not None:
        app.conf.broker_url = broker_url


def engine() -> sa.Engine:
    if _state["engine"] is None:
        url = _state["url"] or os.environ.get("BENCH_DATABASE_URL") or os.environ["DATABASE_URL"]
        _state["engine"] = make_engine(url, pool_size=1, max_overflow=1, application_name="bench-naive")
    return _state["engine"]


def _load(msg: dict[str, Any]) -> tuple[RecordType, dict[str, Any] | None]:
    rt = get_registry()[msg["type"]]
    data, errors = rt.validate(msg["payload"], datetime.fromisoformat(msg["received_at"]))
    return rt, (None if errors else data)


@app.task(name="naive.validate")
def validate(msg: dict[str, Any]) -> dict[str, Any] | None:
    _, data = _load(msg)
    return msg if data is not None else None


@app.task(name="naive.enrich", bind=True, max_retries=600)
def enrich(self, msg: dict[str, Any] | None) -> dict[str, Any] | None:
    if msg is None:
        return None
    rt, data = _load(msg)
    if data is None:
        return None
    registry = get_registry()
    parents = {}
    with engine().connect() as conn:
        for ref in rt.parents:
            parent = registry[ref.record_type]
            key = parent.table.c[parent.key]
            row = conn.execute(sa.select(parent.table).where(key == data[ref.field])).mappings().first()
            if row is None:
                raise self.retry(countdown=1)
            if any(data.get(c) != row.get(p) for c, p in ref.must_match):
                return None
            parents[ref.record_type] = row
    derived = rt.derive(data, datetime.fromisoformat(msg["received_at"]), parents)
    return {**msg, "derived": derived, "enriched_at": datetime.now(UTC).isoformat()}


@app.task(name="naive.persist")
def persist(msg: dict[str, Any] | None) -> int:
    if msg is None:
        return 0
    rt, data = _load(msg)
    if data is None:
        return 0
    row = {
        **data,
        **msg["derived"],
        "ingestion_id": uuid.UUID(msg["ingestion_id"]),
        "received_at": datetime.fromisoformat(msg["received_at"]),
        "enriched_at": datetime.fromisoformat(msg["enriched_at"]),
        "persisted_at": datetime.now(UTC),
        "schema_version": rt.schema_version,
        "source": data.get("source") or "bench-naive",
    }
    names = [c.name for c in rt.table.columns]
    stmt = insert(rt.table).values({k: row.get(k) for k in names})
    stmt = stmt.on_conflict_do_update(index_elements=[rt.key], set_={k: stmt.excluded[k] for k in names if k != rt.key})
    with engine().begin() as conn:
        conn.execute(stmt)
    return 1


def record_chain(record_type: str, payload: dict[str, Any], ingestion_id: str) -> chain:
    """The chain for one record, received now."""
    msg = {
        "type": record_type,
        "payload": payload,
        "received_at": datetime.now(UTC).isoformat(),
        "ingestion_id": ingestion_id,
    }
    return chain(validate.s(msg), enrich.s(), persist.s())
