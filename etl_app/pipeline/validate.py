"""Load a chunk's unsettled raw records from the outbox and check them against their schema."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from etl_app import errors
from etl_app.deadletters.store import Failure
from etl_app.record_types import RecordType

_LOAD = sa.text(
    "SELECT id, ingestion_id, payload, received_at, waiting_since FROM raw_records "
    "WHERE id = ANY(:ids) AND status = 'received' ORDER BY id"
)


def load_raw(conn: sa.Connection, ids: Sequence[int]) -> list[sa.Row]:
    """The chunk's raw records that are still unsettled (settled ones are skipped: idempotence)."""
    return list(conn.execute(_LOAD, {"ids": list(ids)}))


def validate_chunk(rt: RecordType, raws: Iterable[sa.Row]) -> tuple[list[dict[str, Any]], list[Failure]]:
    """Check every raw payload against its schema; split into items and validation failures."""
    items: list[dict[str, Any]] = []
    failures: list[Failure] = []
    for raw in raws:
        data, field_errors = rt.validate(raw.payload, raw.received_at)
        if data is None:
            failures.append(Failure(raw.id, errors.VALIDATION, format_field_errors(field_errors)))
            continue
        items.append(
            {
                "id": raw.id,
                "ingestion_id": str(raw.ingestion_id),
                "received_at": raw.received_at,
                "waiting_since": raw.waiting_since,
                "data": data,
            }
        )
    return items, failures


def format_field_errors(field_errors: Mapping[str, Sequence[str]]) -> str:
    return "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in field_errors.items())
