"""The outbox: accepted records are committed to raw_records before the API answers, then
published; the sweeper re-drives whatever did not go out or did not settle."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from celery import Celery

from etl_app.chunks import Stash
from etl_app.jsonsafe import json_safe
from etl_app.publish import publish_chunks, publish_claimed, publish_validated
from etl_app.registry import RecordType

log = logging.getLogger(__name__)

# Records never published (the broker was down at accept time) are swept after this grace.
UNPUBLISHED_GRACE_SECONDS = 5


@dataclass
class Accepted:
    """The outcome of one ingest call."""

    ingestion_id: uuid.UUID
    record_type: str
    received_at: datetime | None = None
    ids: list[int] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.ids)


def _jsonb(value: Any) -> str:
    return orjson.dumps(value).decode()


# Below this many records one INSERT … SELECT FROM unnest(…) beats COPY's extra round trips.
COPY_THRESHOLD = 64

_INGESTION = (
    "INSERT INTO ingestions (id, record_type, source, accepted, rejected, rejections, created_at) "
    "VALUES (:id, :t, :source, :accepted, :rejected, CAST(:rejections AS jsonb), :at)"
)
_STORE_SMALL = sa.text(
    f"WITH ingestion AS ({_INGESTION}) "
    "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, status, received_at, updated_at, "
    "enqueued_at) SELECT :id, :t, r.key, r.payload, 'received', :at, :at, :enqueued_at "
    "FROM unnest(CAST(:keys AS text[]), CAST(:payloads AS jsonb[])) WITH ORDINALITY AS r(key, payload, n) "
    "ORDER BY r.n RETURNING id"
)
_STORE_IDS = sa.text(
    f"WITH ingestion AS ({_INGESTION}) "
    "SELECT nextval(pg_get_serial_sequence('raw_records', 'id')) FROM generate_series(1, :accepted)"
)


def store_and_commit(engine: sa.Engine, rt: RecordType, payloads: Sequence[Any], **kwargs: Any) -> Accepted:
    """:func:`store` and commit. A few records are one statement, which commits by itself
    (autocommit: no BEGIN and COMMIT round trips); more are a transaction around the COPY."""
    if len(payloads) < COPY_THRESHOLD:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return store(conn, rt, payloads, **kwargs)
    with engine.begin() as conn:
        return store(conn, rt, payloads, **kwargs)


def store(
    conn: sa.Connection,
    rt: RecordType,
    payloads: Sequence[Any],
    *,
    source: str,
    received_at: datetime,
    rejections: list[dict[str, Any]],
    relayed: bool = False,
) -> Accepted:
    """Write the ingestion row and every accepted payload in the caller's transaction: one
    statement for a few records, COPY for more.

    ``relayed``: leave ``enqueued_at`` unset, for the outbox relay to publish (small
    submissions); otherwise the caller publishes right after the commit."""
    ingestion_id = uuid.uuid4()
    params = {
        "id": ingestion_id,
        "t": rt.name,
        "source": source,
        "accepted": len(payloads),
        "rejected": len(rejections),
        "rejections": _jsonb(json_safe(rejections[:1000])),
        "at": received_at,
    }
    result = Accepted(ingestion_id, rt.name, received_at=received_at, rejections=rejections)
    enqueued_at = None if relayed else received_at
    if len(payloads) < COPY_THRESHOLD:
        params.update(
            keys=[rt.natural_key(p) for p in payloads], payloads=[_jsonb(p) for p in payloads], enqueued_at=enqueued_at
        )
        result.ids = [r[0] for r in conn.execute(_STORE_SMALL, params)]
        return result
    ids = [r[0] for r in conn.execute(_STORE_IDS, params)]
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(
        "COPY raw_records (id, ingestion_id, record_type, natural_key, payload, status, received_at, updated_at, "
        "enqueued_at) FROM STDIN"
    ) as copy:
        for raw_id, payload in zip(ids, payloads, strict=True):
            copy.write_row(
                (
                    raw_id,
                    ingestion_id,
                    rt.name,
                    rt.natural_key(payload),
                    _jsonb(payload),
                    "received",
                    received_at,
                    received_at,
                    enqueued_at,
                )
            )
    result.ids = ids
    return result


_publisher = ThreadPoolExecutor(max_workers=4, thread_name_prefix="etl-publish")


def send_or_leave(
    engine: sa.Engine, send: Callable[[], Any], ids: Sequence[int], *, timeout: float | None, what: str
) -> bool:
    """Run ``send`` (which publishes the chains of these committed records) within ``timeout``
    seconds (None: no deadline). If the broker cannot take them, flag the records unpublished
    (``enqueued_at`` NULL) so the relay or the sweeper sends them later, and return False; the
    records are durable either way. A send that outlives the deadline finishes in the
    background; a duplicate enqueue is harmless."""
    try:
        if timeout is None:
            send()
        else:
            _publisher.submit(send).result(timeout=timeout)
        return True
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the records to the relay and sweeper
        log.warning("could not publish %s (%d records): %s; left to the relay and the sweeper", what, len(ids), exc)
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE raw_records SET enqueued_at = NULL WHERE id = ANY(:ids) AND status = 'received'"),
                    {"ids": list(ids)},
                )
        except Exception as db_exc:  # noqa: BLE001 - then the lease applies instead of the grace
            log.warning("could not flag unpublished records: %s", db_exc)
        return False


def publish(
    engine: sa.Engine,
    celery_app: Celery,
    accepted: Accepted,
    *,
    chunk_size: int,
    timeout: float,
    validated: list[dict[str, Any]] | None = None,
    stash: Stash | None = None,
) -> bool:
    """Enqueue an ingestion's chains after the commit (see :func:`send_or_leave`). ``validated``:
    the records' loaded values, in the order of ``accepted.ids``, passed on through ``stash`` so
    the worker does not validate them again."""
    if not accepted.ids:
        return True
    if validated is None or stash is None:

        def send() -> Any:
            return publish_chunks(celery_app, accepted.record_type, accepted.ids, chunk_size)
    else:
        items = [
            {
                "id": raw_id,
                "ingestion_id": str(accepted.ingestion_id),
                "received_at": accepted.received_at,
                "waiting_since": None,
                "data": data,
            }
            for raw_id, data in zip(accepted.ids, validated, strict=True)
        ]

        def send() -> Any:
            return publish_validated(celery_app, stash, accepted.record_type, items, chunk_size)

    return send_or_leave(engine, send, accepted.ids, timeout=timeout, what=f"ingestion {accepted.ingestion_id}")


_CLAIM = sa.text(
    """
    WITH due AS (
        SELECT id FROM raw_records
        WHERE status = 'received'
          AND ((enqueued_at IS NULL AND received_at < now() - make_interval(secs => :grace))
               OR enqueued_at < now() - make_interval(secs => :lease))
        ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
    )
    UPDATE raw_records r SET enqueued_at = now() FROM due WHERE r.id = due.id
    RETURNING r.id, r.record_type
    """
)


def sweep(engine: sa.Engine, celery_app: Celery, *, lease_seconds: int, batch_size: int, chunk_size: int) -> int:
    """Claim due records (SKIP LOCKED, so several sweepers never take the same ones), publish
    them in chunks, and commit the claim only once they are out."""
    total = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                _CLAIM, {"grace": UNPUBLISHED_GRACE_SECONDS, "lease": lease_seconds, "limit": batch_size}
            ).all()
            publish_claimed(celery_app, rows, chunk_size)
        total += len(rows)
        if len(rows) < batch_size:
            return total
