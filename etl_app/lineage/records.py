"""A stored record as an operator reads it: its row by natural key, split into the fields it was
sent with and the fields derived from them (``GET /api/v1/records/...`` and the Record page)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from etl_app.db import LINEAGE_FIELDS
from etl_app.record_types import RecordType


def input_fields(record_type: RecordType) -> list[str]:
    return [name for name in record_type.loader.fields if name not in LINEAGE_FIELDS]


def derived_fields(record_type: RecordType) -> list[str]:
    inputs = set(input_fields(record_type))
    return [c.name for c in record_type.table.columns if c.name not in inputs and c.name not in LINEAGE_FIELDS]


def stored_row(conn: sa.Connection, record_type: RecordType, key: str) -> sa.RowMapping | None:
    """The row of ``record_type``'s table holding ``key`` (None when none does)."""
    table = record_type.table
    return conn.execute(sa.select(table).where(table.c[record_type.key] == key)).mappings().first()


def record_fields(record_type: RecordType, row: sa.RowMapping) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stored row's input fields and derived fields, as the API and the Record page show them."""
    fields = {name: row[name] for name in input_fields(record_type) if name in row}
    return fields, {name: row[name] for name in derived_fields(record_type)}
