"""Where a chunk's values wait between the stages, and the shape of one record's values (an
:class:`Item`).

Messages stay small: they carry the chunk's raw-record ids and the key of its values, which
wait in Redis (:class:`Stash`) as one orjson document, instead of passing through Celery's
JSON serializer and the worker's parent process three times. Dates and timestamps come back
as ``date`` / aware ``datetime`` (the offset kept) by the column types of the record type's
table. If the values are gone (Redis lost them, or they expired), the stage sends the ids
through the pipeline again, from the outbox.

When Redis does not take them (down, unreachable: with a RabbitMQ broker it is the cache only),
the values travel in the message instead: the "key" is then ``inline:`` and the document in
base64, which :meth:`Stash.get` reads back without Redis. Larger messages (about 1 MB for a
chunk of 2,000 sessions), but the pipeline goes on while the cache is down.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from functools import cache
from typing import Any, NotRequired, TypedDict

import orjson
import redis
import sqlalchemy as sa

from etl_app.record_types import RecordType

STASH_TTL_SECONDS = 86_400
INLINE = "inline:"  # a stash "key" that is the document itself (base64), see the module

log = logging.getLogger(__name__)


class Item(TypedDict):
    """One record's values on their way through the stages; build it with :func:`item`."""

    id: int  # its raw record
    ingestion_id: str
    received_at: datetime  # the as-of moment of its time-dependent rules and derived fields
    waiting_since: datetime | None  # when it first waited for a missing parent
    data: dict[str, Any]  # the loaded values; enrich adds the derived fields
    enriched_at: NotRequired[datetime]  # set by enrich


ITEM_TIMESTAMPS = ("received_at", "waiting_since", "enriched_at")


def item(
    raw_id: int, ingestion_id: Any, received_at: datetime, waiting_since: datetime | None, data: dict[str, Any]
) -> Item:
    return {
        "id": raw_id,
        "ingestion_id": str(ingestion_id),
        "received_at": received_at,
        "waiting_since": waiting_since,
        "data": data,
    }


def encode(items: Sequence[Item]) -> bytes:
    return orjson.dumps(items)


@cache
def _converters(record_type: RecordType) -> tuple[tuple[str, Callable[[str], Any]], ...]:
    out = []
    for column in record_type.table.columns:
        if isinstance(column.type, sa.DateTime):
            out.append((column.name, datetime.fromisoformat))
        elif isinstance(column.type, sa.Date):
            out.append((column.name, date.fromisoformat))
    return tuple(out)


def decode(record_type: RecordType, blob: str | bytes) -> list[Item]:
    items = orjson.loads(blob)
    converters = _converters(record_type)
    for one in items:
        for name in ITEM_TIMESTAMPS:
            value = one.get(name)
            if value is not None:
                one[name] = datetime.fromisoformat(value)
        data = one["data"]
        for name, convert in converters:
            value = data.get(name)
            if value is not None:
                data[name] = convert(value)
    return items


class Stash:
    """Chunk values kept in Redis between stages, under the deployment's key prefix."""

    def __init__(self, client: redis.Redis, prefix: str = "") -> None:
        self.client, self.prefix = client, prefix

    def put(self, items: Sequence[Item]) -> str:
        return self.put_encoded(encode(items))

    def put_encoded(self, document: bytes) -> str:
        """Keep a chunk's values already encoded (persist's rows: :func:`etl_app.pipeline.persist.rows_document`);
        their key, or the values themselves (:data:`INLINE`) when Redis does not take them."""
        key = f"{self.prefix}etl:chunk:{uuid.uuid4().hex}"
        try:
            self.client.set(key, document, ex=STASH_TTL_SECONDS)
        except redis.RedisError as exc:
            log.warning("stash: Redis did not take a chunk's values (%s); they go in the message", exc)
            return INLINE + base64.b64encode(document).decode("ascii")
        return key

    def get(self, record_type: RecordType, key: str) -> list[Item] | None:
        blob = self.get_encoded(key)
        return None if blob is None else decode(record_type, blob)

    def get_encoded(self, key: str) -> bytes | None:
        """The chunk's values as stored (one JSON array of items), for a reader that hands them
        on undecoded (persist gives them to PostgreSQL)."""
        if key.startswith(INLINE):
            return base64.b64decode(key[len(INLINE) :])
        return self.client.get(key)

    def drop(self, key: str) -> None:
        """Best effort: what is not dropped expires."""
        if key.startswith(INLINE):
            return
        try:
            self.client.delete(key)
        except redis.RedisError:
            pass
