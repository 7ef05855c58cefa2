"""How a chunk's records travel between the stages: one compact JSON string per message.

Celery's JSON serializer walks every value of a message in Python; a chunk of 500 records
becomes one string instead, encoded and decoded by orjson. Dates and timestamps come back as
``date`` / aware ``datetime`` (the offset kept) by the column types of the record type's table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from functools import cache
from typing import Any

import orjson
import sqlalchemy as sa

from etl_app.registry import RecordType

ITEM_TIMESTAMPS = ("received_at", "waiting_since", "enriched_at")


def encode(items: Sequence[dict[str, Any]]) -> str:
    return orjson.dumps(items).decode()


@cache
def _converters(rt: RecordType) -> tuple[tuple[str, Callable[[str], Any]], ...]:
    out = []
    for column in rt.table.columns:
        if isinstance(column.type, sa.DateTime):
            out.append((column.name, datetime.fromisoformat))
        elif isinstance(column.type, sa.Date):
            out.append((column.name, date.fromisoformat))
    return tuple(out)


def decode(rt: RecordType, blob: str) -> list[dict[str, Any]]:
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


def ids_of(blob: str) -> list[int]:
    return [int(item["id"]) for item in orjson.loads(blob)]
