"""Generated records as flat files: CSV, TSV, XLSX and Parquet, written as they are generated.

One column per input field of the record type's schema, in schema order (``source`` and
``event_time``, which every type accepts but the generator never fills, are left out), headed
by the field's name. What the upload parser reads back (columns matched to fields by name):

- a missing or null value is an empty cell (so an empty optional string is an empty cell too);
- a list field (``subjects``, ``improvement_areas``) is its items joined with ``;``;
- CSV / TSV: booleans ``true`` / ``false``, dates and timestamps as the ISO text generated
  (timestamps keep their offset, or its absence);
- XLSX: numbers and booleans as such, dates as dates, timestamps as datetimes in UTC without
  a zone (Excel has none; naive means UTC to the schema), so the instant is kept but a given
  offset is not;
- Parquet: typed columns: int64, float64, bool, date32, timestamp[us, UTC] (same instant rule),
  text for the rest.

Memory stays flat: CSV rows go to the file as they come, XLSX uses openpyxl's write-only
workbook (rows stream to a temporary file; the zip is written on save), Parquet is written in
row groups of :data:`ROW_GROUP` rows.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any, BinaryIO

FLAT_FORMATS = ("csv", "tsv", "xlsx", "parquet")
BINARY_FORMATS = ("xlsx", "parquet")
XLSX_MAX_ROWS = 1_048_575  # Excel's 1,048,576 rows, less the header
ROW_GROUP = 65_536
LIST_SEPARATOR = ";"
_NOT_COLUMNS = ("source", "event_time")


class TooManyRows(ValueError):
    """More records than the format holds."""


def columns(record_type: str) -> list[tuple[str, str]]:
    """``(field, kind)`` for every column of ``record_type``, in schema order; kind is one of
    text, list, int, float, bool, date, timestamp."""
    from etl_app.record_types import get_registry
    from schemas.common import Day, Number, StrictBool, StrictInt, StrList, Timestamp

    kinds = ((StrList, "list"), (StrictInt, "int"), (Number, "float"), (StrictBool, "bool"))
    kinds += ((Timestamp, "timestamp"), (Day, "date"))
    out = []
    for name, field in get_registry()[record_type].loader.fields.items():
        if name in _NOT_COLUMNS:
            continue
        kind = next((k for cls, k in kinds if isinstance(field, cls)), "text")
        out.append((name, kind))
    return out


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _text_cell(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "list":
        return LIST_SEPARATOR.join(value)
    if kind == "bool":
        return "true" if value else "false"
    return str(value)


def _typed_cell(kind: str, value: Any) -> Any:
    """A value for XLSX / Parquet: Python types, timestamps as aware UTC datetimes."""
    if value is None or value == "":
        return None
    if kind == "list":
        return LIST_SEPARATOR.join(value)
    if kind == "timestamp":
        return _utc(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "float":
        return float(value)
    return value


def _rows(records: Iterable[dict[str, Any]], cols: list[tuple[str, str]], cell: Callable[[str, Any], Any]):
    names = {name for name, _ in cols}
    for record in records:
        extra = record.keys() - names
        if extra:
            raise ValueError(f"record has fields that are not columns: {', '.join(sorted(extra))}")
        yield [cell(kind, record.get(name)) for name, kind in cols]


def _write_delimited(rows, header: list[str], out: BinaryIO, delimiter: str) -> int:
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=False)
    try:
        writer = csv.writer(text, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        n = 0
        for row in rows:
            writer.writerow(row)
            n += 1
        text.flush()
    finally:
        text.detach()  # the caller owns ``out`` (it may be stdout)
    return n


def _write_xlsx(rows, header: list[str], out: BinaryIO, sheet: str) -> int:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    ws = workbook.create_sheet(sheet)
    ws.append(header)
    n = 0
    try:
        for row in rows:
            if n >= XLSX_MAX_ROWS:
                raise TooManyRows(f"xlsx holds at most {XLSX_MAX_ROWS:,} rows of data (Excel's limit)")
            ws.append([v.replace(tzinfo=None) if isinstance(v, datetime) else v for v in row])
            n += 1
    except BaseException:
        with contextlib.suppress(Exception):  # finish and remove the sheet's temporary file
            ws.close()
            ws._writer.cleanup()
        raise
    workbook.save(out)
    return n


def _arrow_schema(cols: list[tuple[str, str]]):
    import pyarrow as pa

    types = {
        "text": pa.string(),
        "list": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([pa.field(name, types[kind]) for name, kind in cols])


def _write_parquet(rows, cols: list[tuple[str, str]], out: BinaryIO) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema(cols)
    n = 0
    with pq.ParquetWriter(out, schema) as writer:
        batch: list[list[Any]] = [[] for _ in cols]

        def flush() -> None:
            arrays = [pa.array(column, type=field.type) for column, field in zip(batch, schema, strict=True)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=ROW_GROUP)
            for column in batch:
                column.clear()

        for row in rows:
            for column, value in zip(batch, row, strict=True):
                column.append(value)
            n += 1
            if n % ROW_GROUP == 0:
                flush()
        if n % ROW_GROUP or n == 0:
            flush()
    return n


def write_flat(records: Iterable[dict[str, Any]], out: BinaryIO, fmt: str, record_type: str) -> int:
    """Write ``records`` of ``record_type`` to ``out`` as ``fmt`` (one of :data:`FLAT_FORMATS`);
    returns how many. :class:`TooManyRows` when XLSX would pass Excel's limit (``out`` then
    holds nothing usable)."""
    cols = columns(record_type)
    header = [name for name, _ in cols]
    if fmt in ("csv", "tsv"):
        rows = _rows(records, cols, _text_cell)
        return _write_delimited(rows, header, out, "," if fmt == "csv" else "\t")
    if fmt == "xlsx":
        return _write_xlsx(_rows(records, cols, _typed_cell), header, out, record_type)
    if fmt == "parquet":
        return _write_parquet(_rows(records, cols, _typed_cell), cols, out)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FLAT_FORMATS)}")
