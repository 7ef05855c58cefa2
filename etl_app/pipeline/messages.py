"""The chunk message, built and read here only, and the chains that carry it.

A chain ``etl.validate → etl.enrich → etl.persist`` carries one chunk of raw records of one
record type. Its message (a JSON object: Celery serializes JSON only) is a
:class:`ChunkMessage`:

- ``type``: the record type's name;
- ``ids``: the chunk's raw-record ids;
- ``stash``: the key under which the chunk's values wait in Redis between stages
  (:mod:`etl_app.pipeline.stash`); absent from a chunk of bare ids, which validate loads from
  the outbox;
- ``validated``: the API validated the values in the stash already; validate passes them on
  instead of running the schema again;
- ``rows``: the stash holds the chunk's rows as persist reads them
  (:func:`etl_app.pipeline.persist.rows_document`), not items; enrich sets it for persist (a
  persist message without it, from an enrich that stashed items, has them converted first);
- ``parent_retries``: how often the chunk's records have waited for a missing parent (the
  exponent of their next backoff);
- ``leased``: when the records' lease in the outbox (``raw_records.enqueued_at``) was last set,
  in seconds since the epoch; a stage refreshes the lease when it is older than half
  ``ETL_OUTBOX_LEASE_SECONDS`` (see :mod:`etl_app.ingest.claim`).

Validate receives bare ids (from the relay, the sweeper, a replay or a split) or validated values
(from a large API batch), and hands enrich ``{type, ids, stash, parent_retries, leased}``; enrich hands
persist ``{type, ids, stash, rows, leased}`` with the derived fields in the stash's rows. A stage that has
nothing left to pass on returns None, and the next stage then does nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Required, TypedDict

import redis
from celery import Celery, chain

from etl_app.names import DEAD_LETTER, DEAD_LETTER_QUEUE, ENRICH, LOOKUPS_QUEUE, PERSIST, PIPELINE_QUEUE, VALIDATE
from etl_app.pipeline.queue_head import SENT_AT_HEADER, read_head  # the header, named beside the heads
from etl_app.pipeline.queues import rabbitmq_ready
from etl_app.pipeline.stash import Item, Stash

log = logging.getLogger(__name__)


class ChunkMessage(TypedDict, total=False):
    """The wire format of a chunk (see the module docstring); build it with :func:`chunk_message`."""

    type: Required[str]
    ids: Required[list[int]]
    stash: str
    validated: bool
    rows: bool
    parent_retries: int
    leased: float


@dataclass(frozen=True)
class Chunk:
    """A chunk message as read by :func:`read_chunk`."""

    type_name: str
    ids: list[int]
    stash: str | None = None
    validated: bool = False
    rows: bool = False
    parent_retries: int = 0
    leased: float | None = None


class UnreadableMessage(ValueError):
    """A message that is not a chunk: nothing in it can be processed or dead-lettered."""


def chunk_message(
    type_name: str,
    ids: Sequence[int],
    *,
    stash: str | None = None,
    validated: bool = False,
    rows: bool = False,
    parent_retries: int = 0,
    leased: float | None = None,
) -> ChunkMessage:
    """The message for a chunk of these raw records (optional keys only when they say something).
    ``leased`` defaults to now: the sender has just set the records' lease."""
    message: ChunkMessage = {
        "type": type_name,
        "ids": [int(i) for i in ids],
        "leased": time.time() if leased is None else float(leased),
    }
    if stash is not None:
        message["stash"] = stash
    if validated:
        message["validated"] = True
    if rows:
        message["rows"] = True
    if parent_retries:
        message["parent_retries"] = parent_retries
    return message


def read_chunk(message: Any) -> Chunk:
    """Read a chunk message; :class:`UnreadableMessage` if it is not one."""
    if not isinstance(message, Mapping) or not isinstance(message.get("type"), str):
        raise UnreadableMessage(f"not a chunk message: {str(message)[:200]}")
    try:
        ids = [int(i) for i in message.get("ids") or ()]
        parent_retries = int(message.get("parent_retries") or 0)
        leased = float(message["leased"]) if message.get("leased") is not None else None
    except (TypeError, ValueError):
        raise UnreadableMessage(f"a chunk message with unreadable ids: {str(message)[:200]}") from None
    stash = message.get("stash")
    return Chunk(
        type_name=message["type"],
        ids=ids,
        stash=stash if isinstance(stash, str) else None,
        validated=bool(message.get("validated")),
        rows=bool(message.get("rows")),
        parent_retries=parent_retries,
        leased=leased,
    )


# -- sending ----------------------------------------------------------------------------------


def publish_options() -> dict:
    """One quick retry; celeryconfig's socket timeouts bound each try. Callers that must not
    wait at all (the API) also send under a deadline: see :mod:`etl_app.ingest.send`."""
    return {
        "retry": True,
        "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
    }


def enrich_queue(type_name: str) -> str:
    """The queue of a record type's enrich stage: ``lookups`` when the type declares external
    lookups (its enrich may wait on another service), else ``etl`` like the other stages. A
    retry of that stage (``Task.retry``) goes back to the queue it came from."""
    from etl_app.record_types import get_registry

    record_type = get_registry().get(type_name)
    return LOOKUPS_QUEUE if record_type is not None and record_type.lookups else PIPELINE_QUEUE


def pipeline_chain(celery_app: Celery, message: ChunkMessage) -> chain:
    """validate → enrich → persist for one chunk message; enrich on :func:`enrich_queue`."""
    return chain(
        celery_app.signature(VALIDATE, args=(message,)),
        celery_app.signature(ENRICH, queue=enrich_queue(message["type"])),
        celery_app.signature(PERSIST),
    )


def chunked(values: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def publish_chunks(
    celery_app: Celery,
    type_name: str,
    ids: Sequence[int],
    chunk_size: int,
    *,
    countdown: float | None = None,
    parent_retries: int = 0,
) -> int:
    """Enqueue one chain of bare ids per chunk; raises if the broker is unreachable."""
    sent = 0
    leased = time.time() + (countdown or 0)  # the records' lease runs from when the chain resumes
    for part in chunked(list(ids), chunk_size):
        message = chunk_message(type_name, part, parent_retries=parent_retries, leased=leased)
        pipeline_chain(celery_app, message).apply_async(queue=PIPELINE_QUEUE, countdown=countdown, **publish_options())
        sent += 1
    return sent


def publish_validated(celery_app: Celery, stash: Stash, type_name: str, items: Sequence[Item], chunk_size: int) -> int:
    """Enqueue chains for records the API has just validated: their loaded values wait in the
    stash, so the schema runs once per record (the validate stage passes them on)."""
    sent = 0
    for part in chunked(list(items), chunk_size):
        message = chunk_message(type_name, [item["id"] for item in part], stash=stash.put(part), validated=True)
        pipeline_chain(celery_app, message).apply_async(queue=PIPELINE_QUEUE, **publish_options())
        sent += 1
    return sent


def publish_dead_letters(celery_app: Celery, type_name: str, failures: list[dict], task_name: str) -> None:
    """Send failed records through the dead-letter queue (its own consumer writes dead_letters)."""
    celery_app.send_task(
        DEAD_LETTER,
        args=(type_name, failures, task_name),
        queue=DEAD_LETTER_QUEUE,
        **publish_options(),
    )


# -- how long the queue is, in time -------------------------------------------------------------


def stamp_sent_at(headers: dict | None = None, **_kwargs: Any) -> None:
    """``before_task_publish`` handler: every message etl_app sends carries the time it was sent
    (seconds since the epoch), which :func:`oldest_queued_at` reads back."""
    if headers is not None:
        headers[SENT_AT_HEADER] = time.time()


def oldest_queued_at(
    celery_app: Celery, queue: str, *, cache: redis.Redis | None = None, prefix: str = ""
) -> float | None:
    """When the oldest message still waiting in ``queue`` was sent (seconds since the epoch); None
    when the queue is empty, or when that time is not known (then the sweeper goes by the lease
    alone). Raises if the broker is unreachable.

    Redis: the transport pushes messages on the left of one list per priority step and workers
    pop them from the right, so the oldest waiting message is the last element of a list; a
    message without the header (a producer that does not stamp its messages) makes it unknown.
    Messages delivered to a worker (running, prefetched, or held for a countdown) have left the
    list.

    RabbitMQ (any broker other than Redis): AMQP cannot look at a queued message without taking
    it, so when the queue holds messages ready (a passive ``queue.declare``) this is the queue's
    head as the workers measured it (:mod:`etl_app.pipeline.queue_head`): the latest send time of
    a message a worker has taken from it, read from ``cache`` under ``prefix``. Unknown when no
    head was recorded, or when ``cache`` is not given or does not answer."""
    with celery_app.connection_for_read() as conn:
        channel = conn.default_channel
        if not hasattr(channel, "_q_for_pri"):
            return _head_if_queued(conn, queue, cache, prefix)
        prefix = getattr(channel, "global_keyprefix", "") or ""
        keys = [prefix + channel._q_for_pri(queue, pri) for pri in channel.priority_steps]
        with channel.conn_or_acquire() as client:
            raws = [client.execute_command("LINDEX", key, -1) for key in keys]
    sent = []
    for raw in raws:
        if raw is None:
            continue
        try:
            sent.append(float(json.loads(raw)["headers"][SENT_AT_HEADER]))
        except (ValueError, KeyError, TypeError):
            return None  # sent by a producer that does not stamp its messages: unknown
    return min(sent) if sent else None


def _head_if_queued(conn: Any, queue: str, cache: redis.Redis | None, prefix: str) -> float | None:
    """RabbitMQ: None for an empty queue, else its recorded head (None when unknown)."""
    if not rabbitmq_ready(conn, queue) or cache is None:
        return None
    try:
        return read_head(cache, prefix, queue)
    except (redis.RedisError, ValueError) as exc:
        log.warning("the head of queue %s is unknown (Redis: %s); the sweeper goes by the lease alone", queue, exc)
        return None
