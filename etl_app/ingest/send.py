"""Sending chains after the commit, with a deadline; what the broker does not take is left to
the relay and the sweeper."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from celery import Celery

from etl_app.ingest.outbox import Accepted
from etl_app.pipeline.messages import publish_chunks, publish_validated
from etl_app.pipeline.stash import Stash

log = logging.getLogger(__name__)

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
