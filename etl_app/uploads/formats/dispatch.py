"""preflight and read_rows: the checks before a file is stored and its rows, handed to the module of its format."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from etl_app.uploads.formats.common import _CHUNK, FORMATS, FileRefused, Limits, Row, _empty_file, _strip_bom
from etl_app.uploads.formats.delimited import _csv_header, _csv_rows
from etl_app.uploads.formats.json_array import _json_rows
from etl_app.uploads.formats.ndjson import _ndjson_rows
from etl_app.uploads.formats.parquet import _parquet_preflight, _parquet_rows
from etl_app.uploads.formats.xlsx import _xlsx_preflight, _xlsx_rows


def _check_header(columns: list[str], limits: Limits) -> list[str]:
    """Refuse a header with too many columns or a column repeated (after normalisation)."""
    from etl_app.uploads.flat import normalise

    if len(columns) > limits.max_columns:
        raise FileRefused(
            413,
            "too_many_columns",
            f"The file has {len(columns)} columns, more than {limits.max_columns}: remove the extra columns.",
        )
    seen: dict[str, str] = {}
    for name in columns:
        if not name or name.startswith("_"):
            continue
        key = normalise(name)
        if key in seen:
            same = f"'{name}'" if seen[key] == name else f"'{seen[key]}' and '{name}'"
            raise FileRefused(
                422,
                "duplicate_column",
                f"The column {same} appears twice (both read as '{key}'): remove or rename one.",
            )
        seen[key] = name
    return columns


def _check_not_blank(f: BinaryIO) -> None:
    """Refuse a file of nothing but whitespace (and a BOM), reading it in chunks."""
    f.seek(0)
    first = True
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            raise _empty_file()
        if first:
            chunk = _strip_bom(chunk)
            first = False
        if chunk.strip():
            return


def preflight(f: BinaryIO, fmt: str, limits: Limits) -> list[str]:
    """Synchronous checks before the file is stored; returns the header columns.

    The header is returned for csv/tsv/xlsx/parquet (``[]`` for json/ndjson). Refuses: an
    empty file (422 ``empty_file``); a header with a column repeated after normalisation
    (422 ``duplicate_column``) or more than ``max_columns`` columns (413); xlsx that is not a
    readable zip or has no worksheet (422 ``unreadable_file`` / ``no_worksheet``), whose zip
    directory declares more than ``max_uncompressed_bytes``, an entry above
    ``max_compression_ratio`` or a shared-strings part above ``max_shared_strings_bytes``
    (413 ``too_large_uncompressed``), or whose sheet dimension exceeds the caps (413
    ``too_many_rows`` / ``too_many_columns``); parquet whose footer cannot be read (422
    ``unreadable_file``) or with a row group above ``max_row_group_bytes`` (413
    ``row_group_too_large``) or whose footer declares more than ``max_rows`` rows (413
    ``too_many_rows``). ``f`` may be positioned anywhere and is left anywhere.
    """
    if fmt not in FORMATS:
        raise _unsupported(fmt)
    _check_not_blank(f)
    if fmt in ("csv", "tsv"):
        columns, _, _ = _csv_header(f, fmt, limits)
        return _check_header(columns, limits)
    if fmt in ("json", "ndjson"):
        return []
    if fmt == "xlsx":
        return _check_header(_xlsx_preflight(f, limits), limits)
    return _check_header(_parquet_preflight(f, limits), limits)


def read_rows(
    f: BinaryIO, fmt: str, *, checkpoint: dict | None, limits: Limits, size: int
) -> Iterator[tuple[Row, dict]]:
    """Stream the rows of an upload, each with the checkpoint after it.

    ``checkpoint`` is None for the start, else one this function yielded (for the same bytes):
    the rows after it are yielded, nothing lost, nothing repeated. Every checkpoint is a small
    JSON-able dict with ``progress`` (0..1). ``size`` is the file's size in bytes. A part of
    the file that cannot be read raises :class:`FileRefused` (422 ``unreadable_file``, naming
    the row); the rows yielded before it stand. So does a file past ``max_rows`` rows or
    :meth:`Limits.decoded_cap` of values (413 ``too_many_rows`` / ``too_large_decoded``).
    """
    checkpoint = dict(checkpoint or {})
    if fmt in ("csv", "tsv"):
        rows = _csv_rows(f, fmt, checkpoint, limits, size)
    elif fmt == "ndjson":
        rows = _ndjson_rows(f, checkpoint, limits, size)
    elif fmt == "json":
        rows = _json_rows(f, checkpoint, limits, size)
    elif fmt == "xlsx":
        rows = _xlsx_rows(f, checkpoint, limits)
    elif fmt == "parquet":
        rows = _parquet_rows(f, checkpoint, limits)
    else:
        raise _unsupported(fmt)
    return _upload_caps(rows, checkpoint, limits, size)


def _upload_caps(
    rows: Iterator[tuple[Row, dict]], checkpoint: dict, limits: Limits, size: int
) -> Iterator[tuple[Row, dict]]:
    """The rows, refused from the one past ``max_rows`` or past :meth:`Limits.decoded_cap` on
    (413); the rows before it stand. The counts ride in the checkpoints, so a resumed read goes on."""
    count = int(checkpoint.get("count", 0))
    decoded = int(checkpoint.get("decoded", 0))
    cap = limits.decoded_cap(size)
    if cap < limits.max_decoded_bytes:
        what = f"{cap} ({limits.max_expansion} times the file's size, ETL_UPLOAD_MAX_EXPANSION)"
    else:
        what = f"{cap} (ETL_UPLOAD_MAX_DECODED_BYTES)"
    for row, cp in rows:
        count += 1
        if count > limits.max_rows:
            raise FileRefused(
                413,
                "too_many_rows",
                f"The file has more than {limits.max_rows} rows (ETL_UPLOAD_MAX_ROWS): reading stopped at "
                f"row {row.number}, the rows before it are kept; upload the rest as another file.",
            )
        decoded += row.size
        if decoded > cap:
            raise FileRefused(
                413,
                "too_large_decoded",
                f"The file's values add up to more than {what}, counting characters of text and bytes of "
                f"binary values: reading stopped at row {row.number}, the rows before it are kept; upload the "
                "rest as another file.",
            )
        cp["count"], cp["decoded"] = count, decoded  # each reader yields a new dict per row
        yield row, cp


def _unsupported(fmt: str) -> FileRefused:
    return FileRefused(415, "unsupported_format", f"Format {fmt!r} is not accepted: use one of {', '.join(FORMATS)}.")
