"""Load a chunk's unsettled raw records from the outbox and check them against their schema."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import sqlalchemy as sa

from etl_app import errors
from etl_app.dead_letters.store import Failure
from etl_app.models import sql
from etl_app.pipeline.stash import Item, item
from etl_app.record_types import RecordType

_LOAD = sql(
    "SELECT id, ingestion_id, payload, received_at, waiting_since FROM raw_records "
    "WHERE id = ANY(:ids) AND status = :RECEIVED ORDER BY id"
)


def load_raw(conn: sa.Connection, ids: Sequence[int]) -> list[sa.Row]:
    """The chunk's raw records that are still unsettled (settled ones are skipped: idempotence)."""
    return list(conn.execute(_LOAD, {"ids": list(ids)}))


def validate_chunk(record_type: RecordType, raws: Iterable[sa.Row]) -> tuple[list[Item], list[Failure]]:
    """Check every raw payload against its schema; split into items and validation failures."""
    items: list[Item] = []
    failures: list[Failure] = []
    for raw in raws:
        data, field_errors = record_type.validate(raw.payload, raw.received_at)
        if data is None:
            failures.append(Failure(raw.id, errors.VALIDATION, format_field_errors(field_errors)))
            continue
        items.append(item(raw.id, raw.ingestion_id, raw.received_at, raw.waiting_since, data))
    return items, failures


def format_field_errors(field_errors: Mapping[str, Sequence[str]]) -> str:
    return "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in field_errors.items())
