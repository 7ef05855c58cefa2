"""How a chunk's records travel between the stages.

Messages stay small: they carry the chunk's raw-record ids and the key of its values, which
wait in Redis (:class:`Stash`) as one orjson document, instead of passing through Celery's
JSON serializer and the worker's parent process three times. Dates and timestamps come back
as ``date`` / aware ``datetime`` (the offset kept) by the column types of the record type's
table. If the values are gone (Redis lost them, or they expired), the stage sends the ids
through the pipeline again, from the outbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from functools import cache
from typing import Any

import orjson
import redis
import sqlalchemy as sa

from etl_app.record_types import RecordType

ITEM_TIMESTAMPS = ("received_at", "waiting_since", "enriched_at")


STASH_TTL_SECONDS = 86_400


def encode(items: Sequence[dict[str, Any]]) -> bytes:
    return orjson.dumps(items)


@cache
def _converters(rt: RecordType) -> tuple[tuple[str, Callable[[str], Any]], ...]:
    out = []
    for column in rt.table.columns:
        if isinstance(column.type, sa.DateTime):
            out.append((column.name, datetime.fromisoformat))
        elif isinstance(column.type, sa.Date):
            out.append((column.name, date.fromisoformat))
    return tuple(out)


def decode(rt: RecordType, blob: str | bytes) -> list[dict[str, Any]]:
    items = orjson.loads(blob)
    converters = _converters(rt)
    for item in items:
        for name in ITEM_TIMESTAMPS:
            value = item.get(name)
            if value is not None:
                item[name] = datetime.fromisoformat(value)
        data = item["data"]
        for name, convert in converters:
            value = data.get(name)
            if value is not None:
                data[name] = convert(value)
    return items


class Stash:
    """Chunk values kept in Redis between stages, under the deployment's key prefix."""

    def __init__(self, client: redis.Redis, prefix: str = "") -> None:
        self.client, self.prefix = client, prefix

    def put(self, items: Sequence[dict[str, Any]]) -> str:
        key = f"{self.prefix}etl:chunk:{uuid.uuid4().hex}"
        self.client.set(key, encode(items), ex=STASH_TTL_SECONDS)
        return key

    def get(self, rt: RecordType, key: str) -> list[dict[str, Any]] | None:
        blob = self.client.get(key)
        return None if blob is None else decode(rt, blob)

    def drop(self, key: str) -> None:
        """Best effort: what is not dropped expires."""
        try:
            self.client.delete(key)
        except redis.RedisError:
            pass
