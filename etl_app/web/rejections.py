"""An ingestion's rejections as the API and the Ingestions page give them: one page of items, and
the CSV to fix in a spreadsheet and upload again (see :mod:`etl_app.api.rejections` for the
format)."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import sqlalchemy as sa
from flask import Response, stream_with_context

from etl_app.jsonsafe import json_safe
from etl_app.lineage.records import input_fields
from etl_app.uploads.flat import normalise
from etl_app.web.context import ApiError, current_runtime

TRAILING_COLUMNS = ("_raw", "_row", "_errors")


STREAM_ROWS = 1000  # rows a round trip of the server-side cursor


FLUSH_BYTES = 64 * 1024


_INGESTION = sa.text(
    "SELECT i.record_type, EXISTS (SELECT 1 FROM uploads u WHERE u.id = i.id) AS upload "
    "FROM ingestions i WHERE i.id = :id"
)


_COLUMNS = "position, natural_key, raw, errors, created_at"


PAGE = sa.text(
    f"SELECT {_COLUMNS} FROM rejections WHERE ingestion_id = :id AND position >= :from ORDER BY position, id LIMIT :n"
)


_ALL = sa.text(
    f"SELECT {_COLUMNS} FROM rejections WHERE ingestion_id = :id AND position >= :from ORDER BY position, id LIMIT :n"
)


def ingestion_or_404(ingestion_id: str) -> tuple[uuid.UUID, sa.Row]:
    try:
        ident = uuid.UUID(ingestion_id)
    except ValueError:
        raise ApiError(404, "not_found", f"no ingestion {ingestion_id!r}") from None
    with current_runtime().engine.connect() as conn:
        found = conn.execute(_INGESTION, {"id": ident}).first()
    if found is None:
        raise ApiError(404, "not_found", f"no ingestion {ingestion_id!r}")
    return ident, found


def rejection_item(row: sa.Row, *, upload: bool) -> dict[str, Any]:
    return {
        "index": None if upload else row.position,
        "row": row.position if upload else None,
        "natural_key": row.natural_key,
        "raw": row.raw,
        "errors": row.errors,
        "created_at": row.created_at,
    }


def cell(value: Any) -> str:
    """A value as received, as a spreadsheet cell that the upload parser reads back."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ";".join(cell(item) if not isinstance(item, (list, dict)) else _json(item) for item in value)
    if isinstance(value, dict):
        return _json(value)
    return str(value)


def _json(value: Any) -> str:
    return orjson.dumps(json_safe(value)).decode()


def errors_text(errors: Any) -> str:
    """``{field: [message]}`` as ``field: message; field: message``."""
    if not isinstance(errors, dict):
        return cell(errors)
    parts = []
    for field, messages in errors.items():
        for message in messages if isinstance(messages, list) else [messages]:
            parts.append(f"{field}: {cell(message)}")
    return "; ".join(parts)


def csv_row(fields: list[str], position: int, raw: Any, errors: Any) -> list[str]:
    """One rejection as CSV cells: the fields, then ``_raw``, ``_row``, ``_errors``."""
    if isinstance(raw, dict):
        # A file's columns as the parser matched them to fields ("Student ID" is student_id);
        # its note columns (``_row``, ``_errors`` of an earlier download) are not carried over.
        data = {normalise(k): v for k, v in raw.items() if not str(k).strip().startswith("_")}
        values = [cell(data.get(name)) for name in fields]
        leftover = "" if set(data) <= set(fields) else _json(raw)
    else:
        values = [""] * len(fields)
        leftover = raw if isinstance(raw, str) else "" if raw is None else _json(raw)
    return [*values, leftover, str(position), errors_text(errors)]


def _csv_lines(ident: uuid.UUID, fields: list[str], start: int, limit: int | None) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*fields, *TRAILING_COLUMNS])
    # A server-side cursor, STREAM_ROWS rows a round trip: never the whole set in memory.
    with current_runtime().engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(
            _ALL, {"id": ident, "from": start, "n": limit}
        )
        for row in result:
            writer.writerow(csv_row(fields, row.position, row.raw, row.errors))
            if buffer.tell() >= FLUSH_BYTES:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


def csv_response(ident: uuid.UUID, type_name: str, start: int, limit: int | None) -> Response:
    record_type = current_runtime().registry.get(type_name)
    if record_type is None:
        raise ApiError(404, "unknown_record_type", f"record type {type_name!r} is not registered any more")
    return Response(
        stream_with_context(_csv_lines(ident, input_fields(record_type), start, limit)),
        mimetype="text/csv",
        headers={"Content-Disposition": f"attachment; filename=rejections-{ident}.csv"},
    )
