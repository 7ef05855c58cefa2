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
- ``parent_retries``: how often the chunk's records have waited for a missing parent (the
  exponent of their next backoff).

Validate receives bare ids (from the relay, the sweeper, a replay or a split) or validated values
(from a large API batch), and hands enrich ``{type, ids, stash, parent_retries}``; enrich hands
persist ``{type, ids, stash}`` with the derived fields in the stash. A stage that has nothing left
to pass on returns None, and the next stage then does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Required, TypedDict

from celery import Celery, chain

from etl_app.names import DEAD_LETTER, DEAD_LETTER_QUEUE, ENRICH, PERSIST, PIPELINE_QUEUE, VALIDATE
from etl_app.pipeline.stash import Item, Stash


class ChunkMessage(TypedDict, total=False):
    """The wire format of a chunk (see the module docstring); build it with :func:`chunk_message`."""

    type: Required[str]
    ids: Required[list[int]]
    stash: str
    validated: bool
    parent_retries: int


@dataclass(frozen=True)
class Chunk:
    """A chunk message as read by :func:`read_chunk`."""

    type_name: str
    ids: list[int]
    stash: str | None = None
    validated: bool = False
    parent_retries: int = 0


class UnreadableMessage(ValueError):
    """A message that is not a chunk: nothing in it can be processed or dead-lettered."""


def chunk_message(
    type_name: str,
    ids: Sequence[int],
    *,
    stash: str | None = None,
    validated: bool = False,
    parent_retries: int = 0,
) -> ChunkMessage:
    """The message for a chunk of these raw records (optional keys only when they say something)."""
    message: ChunkMessage = {"type": type_name, "ids": [int(i) for i in ids]}
    if stash is not None:
        message["stash"] = stash
    if validated:
        message["validated"] = True
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
    except (TypeError, ValueError):
        raise UnreadableMessage(f"a chunk message with unreadable ids: {str(message)[:200]}") from None
    stash = message.get("stash")
    return Chunk(
        type_name=message["type"],
        ids=ids,
        stash=stash if isinstance(stash, str) else None,
        validated=bool(message.get("validated")),
        parent_retries=parent_retries,
    )


# -- sending ----------------------------------------------------------------------------------


def publish_options() -> dict:
    """One quick retry; celeryconfig's socket timeouts bound each try. Callers that must not
    wait at all (the API) also send under a deadline: see :mod:`etl_app.ingest.send`."""
    return {
        "retry": True,
        "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
    }


def pipeline_chain(celery_app: Celery, message: ChunkMessage) -> chain:
    """validate → enrich → persist for one chunk message."""
    return chain(
        celery_app.signature(VALIDATE, args=(message,)),
        celery_app.signature(ENRICH),
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
    for part in chunked(list(ids), chunk_size):
        message = chunk_message(type_name, part, parent_retries=parent_retries)
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


def queue_depth(celery_app: Celery, queue: str) -> int:
    """Messages waiting in a queue (not those a worker holds unacknowledged); 0 for a queue the
    broker does not know (yet, or any more: an empty Redis list does not exist)."""
    from kombu.exceptions import ChannelError

    with celery_app.connection_for_read() as conn:
        try:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
        except ChannelError:
            return 0
