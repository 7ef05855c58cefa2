"""A stored record as an operator reads it: its row by natural key, split into the fields it was
sent with, the fields derived from them and the unknown fields kept beside them (a schema contract's
``unknown=keep``: the ``extra`` column) (``GET /api/v1/records/...`` and the Record page)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from etl_app.db import LINEAGE_FIELDS
from etl_app.record_types import RecordType
from etl_app.record_types.contract import EXTRA_COLUMN


def input_fields(record_type: RecordType) -> list[str]:
    return [name for name in record_type.loader.fields if name not in LINEAGE_FIELDS]


def derived_fields(record_type: RecordType) -> list[str]:
    inputs = set(input_fields(record_type))
    return [
        c.name
        for c in record_type.table.columns
        if c.name not in inputs and c.name not in LINEAGE_FIELDS and c.name != EXTRA_COLUMN
    ]


def stored_row(conn: sa.Connection, record_type: RecordType, key: str) -> sa.RowMapping | None:
    """The row of ``record_type``'s table holding ``key`` (None when none does)."""
    table = record_type.table
    return conn.execute(sa.select(table).where(table.c[record_type.key] == key)).mappings().first()


def record_fields(record_type: RecordType, row: sa.RowMapping) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stored row's input fields and derived fields, as the API and the Record page show them."""
    fields = {name: row[name] for name in input_fields(record_type) if name in row}
    return fields, {name: row[name] for name in derived_fields(record_type)}


def kept_extra(row: sa.RowMapping) -> dict[str, Any] | None:
    """The unknown fields kept with a stored row, as sent (None: none were kept, or the type's
    table has no ``extra`` column)."""
    return row.get(EXTRA_COLUMN)
