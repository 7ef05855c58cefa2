"""xlsx: the zip checks against bombs, and the first worksheet's header and rows read with openpyxl."""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from typing import Any, BinaryIO

from etl_app.uploads.formats.common import (
    FileRefused,
    Limits,
    MiB,
    Row,
    _detail,
    _jsonable,
    _progress,
    cap_errors,
    capped_raw,
    value_size,
)
from etl_app.uploads.formats.xlsx_sheet import SheetRows
from etl_app.uploads.formats.xlsx_strings import check_strings_size, load_workbook, resolve

# Ratios below this uncompressed size are not checked: small XML parts compress very well and
# cannot hurt.
_RATIO_FLOOR = 1 * MiB
_MAX_ZIP_ENTRIES = 10_000


def _unreadable_xlsx(detail: str) -> FileRefused:
    return FileRefused(
        422, "unreadable_file", f"The .xlsx file cannot be read ({detail}): open it in Excel and save it again."
    )


def _zip_entry_count(f: BinaryIO) -> int:
    """The entry count of the zip's end-of-central-directory record (before zipfile reads it)."""
    f.seek(0, 2)
    size = f.tell()
    tail_len = min(size, 65_535 + 22)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise _unreadable_xlsx("the file is truncated or not a zip archive")
    (total,) = struct.unpack("<H", tail[at + 10 : at + 12])
    return total


def _xlsx_zip_checks(f: BinaryIO, limits: Limits) -> None:
    too_big = (
        f"The .xlsx file unpacks to more than {limits.max_uncompressed_bytes // MiB} MiB "
        "(or is a zip bomb): split it into smaller files."
    )
    if _zip_entry_count(f) >= min(_MAX_ZIP_ENTRIES, 0xFFFF):
        raise FileRefused(413, "too_large_uncompressed", too_big)
    try:
        with zipfile.ZipFile(f) as archive:
            infos = archive.infolist()
    except Exception as exc:  # noqa: BLE001 - BadZipFile, NotImplementedError (zip version), OSError, ...
        raise _unreadable_xlsx(_detail(exc)) from None
    total = 0
    for info in infos:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= _RATIO_FLOOR and ratio > limits.max_compression_ratio:
            raise FileRefused(413, "too_large_uncompressed", too_big)
        if info.filename.lower().endswith("sharedstrings.xml"):  # the part the manifest names is checked too
            check_strings_size(info.file_size, limits)
    if total > limits.max_uncompressed_bytes:
        raise FileRefused(413, "too_large_uncompressed", too_big)


def _open_sheet(f: BinaryIO, limits: Limits, *, refs_only: bool = False) -> tuple[Any, Any, str | None]:
    """``(workbook, first worksheet, shared-strings path)`` in read-only mode, after the zip
    checks; with ``refs_only`` the shared strings are counted, not kept (see ``xlsx_strings``)."""
    _xlsx_zip_checks(f, limits)
    f.seek(0)
    try:
        wb, strings_path = load_workbook(f, limits, refs_only=refs_only)
    except FileRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - openpyxl raises anything on a broken part
        raise _unreadable_xlsx(_detail(exc)) from None
    sheets = wb.worksheets
    if not sheets:
        wb.close()
        raise FileRefused(422, "no_worksheet", "The .xlsx file has no worksheet: put the data in its first sheet.")
    return wb, sheets[0], strings_path


def _header_cells(values: tuple[Any, ...]) -> list[str]:
    cells = list(values)
    while cells and _blank(cells[-1]):
        cells.pop()
    return ["" if c is None else str(c).strip() for c in cells]


def _xlsx_preflight(f: BinaryIO, limits: Limits) -> list[str]:
    wb, ws, strings_path = _open_sheet(f, limits, refs_only=True)
    try:
        try:
            max_row, max_col = ws.max_row, ws.max_column
        except Exception:  # noqa: BLE001
            max_row = max_col = None
        if max_row is not None and max_row > limits.max_sheet_rows:
            raise FileRefused(
                413, "too_many_rows", f"The sheet has {max_row} rows, more than {limits.max_sheet_rows}: split it."
            )
        if max_col is not None and max_col > limits.max_columns:
            raise FileRefused(
                413,
                "too_many_columns",
                f"The sheet has {max_col} columns, more than {limits.max_columns}: remove the extra columns.",
            )
        try:
            first = next(ws.iter_rows(min_row=1, max_row=1, values_only=True), ())
            first = resolve(wb._archive, strings_path, first, limits)
        except FileRefused:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _unreadable_xlsx(f"{_detail(exc)} at row 1") from None
        return _header_cells(first)
    finally:
        wb.close()


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _xlsx_rows(f: BinaryIO, cp: dict, limits: Limits) -> Iterator[tuple[Row, dict]]:
    wb, ws, _ = _open_sheet(f, limits)
    try:
        try:
            max_row = ws.max_row or 0
        except Exception:  # noqa: BLE001
            max_row = 0
        try:
            header = _header_cells(next(ws.iter_rows(min_row=1, max_row=1, values_only=True), ()))
        except Exception as exc:  # noqa: BLE001
            raise _unreadable_xlsx(f"{_detail(exc)} at row 1") from None
        number = max(1, int(cp.get("row", 1)))
        try:
            sheet = SheetRows(ws, number, cp.get("xml"))
        except Exception as exc:  # noqa: BLE001 - the sheet's part is missing or broken
            raise _unreadable_xlsx(f"{_detail(exc)} at row {number + 1}") from None
        rows = iter(sheet)
        try:
            while True:
                try:
                    number, values, place = next(rows)
                except StopIteration:
                    return
                except Exception as exc:  # noqa: BLE001 - a corrupt part found mid-file
                    raise _unreadable_xlsx(f"{_detail(exc)} at row {number + 1}") from None
                if number > limits.max_sheet_rows:
                    raise FileRefused(
                        413,
                        "too_many_rows",
                        f"The sheet has more than {limits.max_sheet_rows} rows, its header included "
                        f"(ETL_UPLOAD_MAX_ROWS): reading stopped at row {number}, the rows before it are kept; "
                        "upload the rest as another file.",
                    )
                new_cp = {"row": number, "xml": place, "progress": _progress(number, max_row)}
                cells = list(values)
                while cells and _blank(cells[-1]):
                    cells.pop()
                if not cells:
                    continue
                yield _xlsx_row(number, header, cells, limits), new_cp
        finally:
            sheet.close()
    finally:
        wb.close()


def _xlsx_row(number: int, header: list[str], cells: list[Any], limits: Limits) -> Row:
    width = len(header)
    named = {(header[i] if i < width and header[i] else f"column {i + 1}"): c for i, c in enumerate(cells)}
    sizes = {name: value_size(c) for name, c in named.items()}
    size, errors = cap_errors(sizes, limits)
    if errors:  # a cell over the cap (a shared string may be referenced by every cell): not kept
        return Row(number, None, errors, capped_raw(named, sizes, limits), size)
    raw = {name: _jsonable(c) for name, c in named.items()}
    for i, cell in enumerate(cells):
        if _blank(cell):
            continue
        if i >= width or not header[i]:
            return Row(number, None, {"_row": [f"has a value in column {i + 1}, which has no header"]}, raw, size)
    values = {name: (cells[i] if i < len(cells) else None) for i, name in enumerate(header) if name}
    return Row(number, values, None, raw, size)
