"""An ingestion's rejections as the API and the Ingestions page give them: one page of items, and
the CSV (or XLSX) to fix in a spreadsheet and upload again (see :mod:`etl_app.api.rejections`
for the format)."""

from __future__ import annotations

import csv
import io
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import sqlalchemy as sa
from flask import Response, stream_with_context
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from etl_app.jsonsafe import json_safe
from etl_app.lineage.records import input_fields
from etl_app.uploads.flat import neutralise, normalise
from etl_app.web.context import ApiError, current_runtime

TRAILING_COLUMNS = ("_raw", "_row", "_errors", "_truncated")


STREAM_ROWS = 1000  # rows a round trip of the server-side cursor


FLUSH_BYTES = 64 * 1024


XLSX_CELL_CHARS = 32_767  # the most a spreadsheet cell holds


_INGESTION = sa.text(
    "SELECT i.record_type, i.rejections_not_stored, EXISTS (SELECT 1 FROM uploads u WHERE u.id = i.id) AS upload "
    "FROM ingestions i WHERE i.id = :id"
)


# Rejections stored before their values were cut to ETL_REJECTION_RAW_BYTES may be far larger:
# past LEGACY_RAW_CHARS of JSON they are given as the start of their JSON text, marked cut.
LEGACY_RAW_CHARS = 64 * 1024


_LEGACY = f"(NOT raw_truncated AND octet_length(CAST(raw AS text)) > {LEGACY_RAW_CHARS})"


_COLUMNS = (
    f"position, natural_key, errors, created_at, raw_size, raw_truncated OR {_LEGACY} AS raw_truncated, "
    f"CASE WHEN {_LEGACY} THEN to_jsonb(left(CAST(raw AS text), {LEGACY_RAW_CHARS}) || '…') ELSE raw END AS raw"
)


PAGE = sa.text(
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
        "raw_truncated": row.raw_truncated,
        "raw_size": row.raw_size if row.raw_truncated else None,
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


def csv_row(fields: list[str], position: int, raw: Any, errors: Any, truncated: bool = False) -> list[str]:
    """One rejection as cells: the fields, then ``_raw``, ``_row``, ``_errors`` and ``_truncated``
    (``true`` when the values were cut when stored)."""
    if isinstance(raw, dict):
        # A file's columns as the parser matched them to fields ("Student ID" is student_id);
        # its note columns (``_row``, ``_errors`` of an earlier download) are not carried over.
        data = {normalise(k): v for k, v in raw.items() if not str(k).strip().startswith("_")}
        values = [cell(data.get(name)) for name in fields]
        unmatched = set(data) - set(fields)
        extra = {k: v for k, v in raw.items() if normalise(k) in unmatched}
        leftover = _json(extra) if extra else ""  # only the values that fit no column
    else:
        values = [""] * len(fields)
        leftover = raw if isinstance(raw, str) else "" if raw is None else _json(raw)
    return [*values, leftover, str(position), errors_text(errors), "true" if truncated else ""]


def _rows(ident: uuid.UUID, fields: list[str], start: int, limit: int | None) -> Iterator[list[str]]:
    """The header, then one row of cells a rejection, read from a server-side cursor STREAM_ROWS
    rows a round trip: never the whole set in memory."""
    yield [*fields, *TRAILING_COLUMNS]
    with current_runtime().engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(
            PAGE, {"id": ident, "from": start, "n": limit}
        )
        for row in result:
            yield csv_row(fields, row.position, row.raw, row.errors, row.raw_truncated)


def _csv_chunks(rows: Iterator[list[str]]) -> Iterator[str]:
    """Every cell quoted, and the ones a spreadsheet would take for a formula with a ``'`` in
    front (:func:`etl_app.uploads.flat.neutralise`, undone by the upload parser)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL)
    for cells in rows:
        writer.writerow([neutralise(c) for c in cells])
        if buffer.tell() >= FLUSH_BYTES:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _xlsx_text(value: str) -> str:
    """A cell's text as a worksheet holds it: characters XML cannot carry as ``\\xNN``, at most
    XLSX_CELL_CHARS."""
    value = ILLEGAL_CHARACTERS_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return value if len(value) <= XLSX_CELL_CHARS else value[: XLSX_CELL_CHARS - 1] + "…"


def _xlsx_chunks(rows: Iterator[list[str]]) -> Iterator[bytes]:
    """A workbook of one sheet, every cell text (type ``s``, number format ``@``): nothing in it is
    read as a formula or a number. openpyxl's write-only mode keeps rows in a temporary file, the
    workbook is written to another and sent FLUSH_BYTES at a time."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("rejections")
    for cells in rows:
        written = []
        for value in cells:
            one = WriteOnlyCell(sheet, value=_xlsx_text(value))
            one.data_type = "s"  # "=…" would otherwise be written as a formula
            one.number_format = "@"
            written.append(one)
        sheet.append(written)
    with tempfile.TemporaryFile() as out:
        workbook.save(out)
        out.seek(0)
        while chunk := out.read(FLUSH_BYTES):
            yield chunk


XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def download_response(ident: uuid.UUID, ingestion: sa.Row, start: int, limit: int | None, fmt: str) -> Response:
    """Every rejection (from ``start``, at most ``limit``) as ``csv`` or ``xlsx``, streamed; the
    rejections not stored (past ETL_MAX_REJECTIONS_STORED) are counted in a response header."""
    record_type = current_runtime().registry.get(ingestion.record_type)
    if record_type is None:
        raise ApiError(404, "unknown_record_type", f"record type {ingestion.record_type!r} is not registered any more")
    rows = _rows(ident, input_fields(record_type), start, limit)
    body, mimetype = (_xlsx_chunks(rows), XLSX_MIMETYPE) if fmt == "xlsx" else (_csv_chunks(rows), "text/csv")
    return Response(
        stream_with_context(body),
        mimetype=mimetype,
        headers={
            "Content-Disposition": f"attachment; filename=rejections-{ident}.{fmt}",
            NOT_STORED_HEADER: str(ingestion.rejections_not_stored),
        },
    )


NOT_STORED_HEADER = "X-Rejections-Not-Stored"
