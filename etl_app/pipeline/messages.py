"""Sending chains to the broker: after the commit, in chunks, with a short timeout."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery, chain

from etl_app.pipeline.stash import Stash

log = logging.getLogger(__name__)

PIPELINE_QUEUE = "etl"
DEAD_LETTER_QUEUE = "dead_letter"
VALIDATE, ENRICH, PERSIST = "etl.validate", "etl.enrich", "etl.persist"
DEAD_LETTER_TASK = "etl.dead_letter.record"


def publish_options() -> dict:
    """One quick retry; celeryconfig's socket timeouts bound each try. Callers that must not
    wait at all (the API) also run the publish under a deadline: see outbox.publish."""
    return {
        "retry": True,
        "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
    }


def pipeline_chain(celery_app: Celery, msg: dict) -> chain:
    """validate → enrich → persist for one chunk message (see etl_app.pipeline for its forms)."""
    return chain(
        celery_app.signature(VALIDATE, args=(msg,)),
        celery_app.signature(ENRICH),
        celery_app.signature(PERSIST),
    )


def chunked(ids: Sequence[int], size: int) -> list[Sequence[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def publish_chunks(
    celery_app: Celery,
    record_type: str,
    ids: Sequence[int],
    chunk_size: int,
    *,
    countdown: float | None = None,
    **extra,
) -> int:
    """Enqueue one validate → enrich → persist chain per chunk; raises if the broker is unreachable."""
    sent = 0
    for part in chunked(list(ids), chunk_size):
        msg = {"type": record_type, "ids": list(part), **extra}
        pipeline_chain(celery_app, msg).apply_async(queue=PIPELINE_QUEUE, countdown=countdown, **publish_options())
        sent += 1
    return sent


def publish_claimed(celery_app: Celery, rows: Sequence[tuple[int, str]], chunk_size: int) -> None:
    """Enqueue chains for claimed ``(raw id, record type)`` rows: per type, in id order, in chunks."""
    by_type: dict[str, list[int]] = {}
    for raw_id, record_type in rows:
        by_type.setdefault(record_type, []).append(raw_id)
    for record_type, ids in by_type.items():
        publish_chunks(celery_app, record_type, sorted(ids), chunk_size)


def publish_validated(
    celery_app: Celery, stash: Stash, record_type: str, items: Sequence[dict], chunk_size: int
) -> int:
    """Enqueue chains for records the API has just validated: their loaded values wait in the
    stash, so the schema runs once per record (the validate stage passes them on)."""
    sent = 0
    for part in chunked(list(items), chunk_size):
        msg = {"type": record_type, "ids": [item["id"] for item in part], "stash": stash.put(part), "validated": True}
        pipeline_chain(celery_app, msg).apply_async(queue=PIPELINE_QUEUE, **publish_options())
        sent += 1
    return sent


def publish_dead_letters(celery_app: Celery, record_type: str, failures: list[dict], task_name: str) -> None:
    """Send failed records through the dead-letter queue (its own consumer writes dead_letters)."""
    celery_app.send_task(
        DEAD_LETTER_TASK,
        args=(record_type, failures, task_name),
        queue=DEAD_LETTER_QUEUE,
        **publish_options(),
    )


def queue_depth(celery_app: Celery, queue: str) -> int:
    """Messages waiting in a queue (not those a worker holds unacknowledged); 0 for a queue the
    broker does not know (yet, or any more: an empty Redis list does not exist)."""
    from kombu.exceptions import ChannelError

    with celery_app.connection_for_read() as conn:
        try:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
        except ChannelError:
            return 0
