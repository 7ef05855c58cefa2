"""The file formats of uploads: detection, synchronous checks and streaming rows.

An uploaded file is read back through a seekable binary file object. :func:`detect` names its
format from the first bytes (the content decides, the name only breaks ties), :func:`preflight`
refuses what cannot be read safely before the file is stored, and :func:`read_rows` streams its
rows with a small JSON-able checkpoint after each, so that a task can stop anywhere and resume
on a fresh file object over the same bytes: nothing lost, nothing repeated.

Formats (:data:`FORMATS`):
- ``csv`` / ``tsv``: UTF-8 text (a BOM is dropped), lines ending in LF or CRLF, fields quoted
  with ``"`` (a quoted field may hold newlines and doubled quotes). The first record is the
  header. The csv delimiter is sniffed from the first 64 KiB among ``,`` ``;`` tab and ``|``
  (the one found the same number of times, outside quotes, in the header and the next records;
  ``,`` when in doubt); tsv is always tab. A data record that is entirely empty is skipped.
  Row numbers are spreadsheet row numbers: the header is row 1 and each record counts one row
  (a quoted newline does not add a row). Resumed by byte offset (the header is re-read from
  offset 0, then the reader seeks): O(1).
- ``json``: one array of objects, streamed with ijson; numbers are read as float or int.
  Resumed by skipping the first N items (a re-parse of those items: O(N), documented cost).
- ``ndjson``: one JSON object per line (blank lines skipped); the row number is the line number.
  Resumed by byte offset.
- ``xlsx``: the first worksheet, read with openpyxl in read-only mode (defusedxml is installed,
  so openpyxl parses XML with it: ``openpyxl.DEFUSEDXML`` is True). Row 1 is the header;
  trailing empty cells and wholly empty rows are ignored; a value in a column with no header
  is a row error. Resumed by row number.
- ``parquet``: read in batches with pyarrow; values keep their types (nanosecond timestamps are
  cut to microseconds). Resumed by row count, whole row groups skipped from the metadata.

Hostile input: anything wrong with the whole file raises :class:`FileRefused` (413, 415 or
422); a bad row is a :class:`Row` with ``errors`` and the reading goes on. Nothing else is
raised; memory stays bounded by :class:`Limits` (a csv/ndjson line is never held beyond
``8 × max_field_bytes``), and an xlsx zip bomb is refused from the zip directory before
anything is decompressed.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, BinaryIO

FORMATS = ("csv", "tsv", "json", "ndjson", "xlsx", "parquet")

KiB, MiB, GiB = 1024, 1024**2, 1024**3
SNIFF_BYTES = 64 * KiB
_CHUNK = 64 * KiB
_BATCH = 1024
_DELIMITERS = (",", "\t", ";", "|")
# Ratios below this uncompressed size are not checked: small XML parts compress very well and
# cannot hurt.
_RATIO_FLOOR = 1 * MiB
_MAX_ZIP_ENTRIES = 10_000
_RAW_TEXT_CHARS = 10_000

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_GZIP_MAGIC = b"\x1f\x8b"
_WIDE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_NAME_FORMATS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".xls": "xls",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_TYPE_FORMATS = {
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.apache.parquet": "parquet",
}


class FileRefused(Exception):
    """The whole file is refused.

    ``status`` is 413 (too large once unpacked), 415 (a format that is not accepted) or 422
    (the file cannot be read); ``code`` is short snake_case; ``message`` is readable and says
    what to do.
    """

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"FileRefused({self.status}, {self.code!r}, {self.message!r})"


@dataclass(frozen=True)
class Limits:
    """Caps on what an upload may unpack to.

    - ``max_uncompressed_bytes`` (1 GiB): xlsx, the sum of the zip entries' uncompressed sizes.
    - ``max_compression_ratio`` (200): xlsx, uncompressed / compressed size of each zip entry
      of at least 1 MiB uncompressed.
    - ``max_sheet_rows`` (1 048 576) and ``max_columns`` (16 384): Excel's own limits; the
      column cap applies to every format's header.
    - ``max_row_group_bytes`` (256 MiB): parquet, the uncompressed size of one row group.
    - ``max_field_bytes`` (1 MiB): one csv/tsv field (in characters) or one ndjson line (in
      bytes); a csv/tsv physical line longer than 8 times this is a row error.
    - ``max_shared_strings_bytes`` (256 MiB): xlsx, the uncompressed shared-strings part,
      which openpyxl holds in memory whole.
    """

    max_uncompressed_bytes: int = 1 * GiB
    max_compression_ratio: int = 200
    max_sheet_rows: int = 1_048_576
    max_columns: int = 16_384
    max_row_group_bytes: int = 256 * MiB
    max_field_bytes: int = 1 * MiB
    max_shared_strings_bytes: int = 256 * MiB


@dataclass
class Row:
    """One row of an upload.

    ``number``: csv/tsv/xlsx the spreadsheet row number (header = 1, first data row = 2);
    ndjson the 1-based line number; json and parquet the 1-based item number.
    ``values``: keyed by the file's own column names (json: the object as is); None when the
    row is unusable. ``errors``: the row-level problem (``{"_row": [...]}`` or
    ``{"_line": [...]}``), else None. ``raw``: the values as received, JSON-able (a dict of
    column to cell for flat formats, the line text for a bad line).
    """

    number: int
    values: dict[str, Any] | None
    errors: dict[str, list[str]] | None
    raw: Any


# --------------------------------------------------------------------------- detection


def _name_format(filename: str | None) -> str | None:
    if not filename:
        return None
    lower = filename.strip().lower()
    for ext, fmt in _NAME_FORMATS.items():
        if lower.endswith(ext):
            return fmt
    return None


def _type_format(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return _TYPE_FORMATS.get(content_type.split(";")[0].strip().lower())


def _strip_bom(data: bytes) -> bytes:
    return data[3:] if data.startswith(codecs.BOM_UTF8) else data


def sniff_delimiter(sample: str) -> str:
    """The delimiter among ``,`` tab ``;`` ``|`` of a text sample (``,`` when in doubt).

    Counts each candidate outside double quotes in the first 20 records of the sample
    (the last, possibly cut, record is dropped): the one seen in the header and the same
    number of times in most records wins, then the most frequent in the header. Linear in the
    sample (``csv.Sniffer`` can take tens of seconds on a hostile 64 KiB sample).
    """
    records: list[dict[str, int]] = []
    counts = dict.fromkeys(_DELIMITERS, 0)
    quoted = False
    complete = False
    for ch in sample:
        if ch == '"':
            quoted = not quoted
        elif not quoted:
            if ch == "\n":
                records.append(counts)
                counts = dict.fromkeys(_DELIMITERS, 0)
                complete = True
                if len(records) >= 20:
                    break
                continue
            if ch in counts:
                counts[ch] += 1
    if not complete or not records:  # one record only: the sample is the header
        records = [counts]
    header = records[0]
    best, best_key = ",", (-1, -1, -1)
    for order, delim in enumerate(_DELIMITERS):
        n = header[delim]
        if n == 0:
            continue
        same = sum(1 for rec in records if rec[delim] == n)
        key = (same, n, -order)
        if key > best_key:
            best, best_key = delim, key
    return best


def detect(head: bytes, filename: str | None, content_type: str | None) -> tuple[str, str | None]:
    """``(format, note)`` of an upload from its first bytes (64 KiB are plenty).

    The content decides first, the name (then the content type) second: zip magic is xlsx
    (checked by :func:`preflight`), ``PAR1`` parquet; a legacy .xls (OLE2), gzip, UTF-16/32
    (BOM) or a text head holding NUL bytes is refused (415). Other text: first non-space
    ``[`` is json, ``{`` ndjson, else csv (tsv when the name or content type says tsv or the
    sniffed delimiter is a tab). ``note`` says when the name disagrees with the content.
    An empty file (or only whitespace/BOM) is refused (422 ``empty_file``).
    """
    named = _name_format(filename) or _type_format(content_type)
    if head.startswith(_ZIP_MAGIC):
        fmt = "xlsx"
    elif head.startswith(b"PAR1"):
        fmt = "parquet"
    elif head.startswith(_OLE2_MAGIC):
        raise FileRefused(
            415, "legacy_excel", "This is a legacy Excel (.xls) file, which is not accepted: save it as .xlsx."
        )
    elif head.startswith(_GZIP_MAGIC):
        raise FileRefused(415, "compressed_file", "Compressed files are not accepted: upload the file uncompressed.")
    elif head.startswith(_WIDE_BOMS):
        raise FileRefused(415, "not_utf8", "The file is UTF-16 or UTF-32 text: save it as UTF-8.")
    else:
        text = _strip_bom(head)
        stripped = text.lstrip()
        if not stripped:
            raise FileRefused(422, "empty_file", "The file is empty: upload a file with a header row and data rows.")
        if b"\x00" in text:
            raise FileRefused(
                415,
                "binary_content",
                "The file holds NUL bytes, so it is not UTF-8 text (UTF-16 text is refused too): "
                "save it as UTF-8 CSV, or upload .xlsx, .json, .ndjson or .parquet.",
            )
        first = stripped[:1]
        if first == b"[":
            fmt = "json"
        elif first == b"{":
            fmt = "ndjson"
        elif named == "tsv":
            fmt = "tsv"
        else:
            sample = text[: text.rfind(b"\n") + 1] or text
            delim = sniff_delimiter(sample.decode("utf-8", "replace"))
            fmt = "tsv" if delim == "\t" else "csv"
    note = None
    if named is not None and named != fmt and not (named in ("csv", "tsv") and fmt in ("csv", "tsv")):
        label = f"named .{named}" if _name_format(filename) else f"sent as {content_type}"
        note = f"{label} but the content is {fmt}; read as {fmt}"
    return fmt, note


# --------------------------------------------------------------------------- lines


class _Lines:
    """Physical lines (``\\n``-terminated) of a binary file from a byte offset.

    ``pos`` is the offset just after the last line returned. A line longer than ``max_line``
    is returned cut (its first ``max_line`` bytes) with ``overlong`` set; the rest of it is
    read and dropped, never held.
    """

    def __init__(self, f: BinaryIO, start: int, max_line: int):
        f.seek(start)
        self.f = f
        self.pos = start
        self.max_line = max_line
        self.buf = b""
        self.i = 0
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(_CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[self.i :] + chunk
        self.i = 0
        return True

    def next(self) -> tuple[bytes, bool] | None:
        """``(line, overlong)``, or None at the end of the file."""
        while True:
            j = self.buf.find(b"\n", self.i)
            if j >= 0 and j + 1 - self.i <= self.max_line:
                line = self.buf[self.i : j + 1]
                self.i = j + 1
                self.pos += len(line)
                return line, False
            if len(self.buf) - self.i > self.max_line:
                return self._skip_overlong()
            if not self._fill():
                if self.i >= len(self.buf):
                    return None
                line = self.buf[self.i :]
                self.i = len(self.buf)
                self.pos += len(line)
                return line, False

    def _skip_overlong(self) -> tuple[bytes, bool]:
        kept = self.buf[self.i : self.i + self.max_line]
        while True:
            j = self.buf.find(b"\n", self.i)
            if j >= 0:
                self.pos += j + 1 - self.i
                self.i = j + 1
                return kept, True
            self.pos += len(self.buf) - self.i
            self.i = len(self.buf)
            if not self._fill():
                return kept, True


class _Overlong(Exception):
    pass


class _LineFeed:
    """The iterator csv.reader pulls from: decoded lines, counting the bytes consumed.

    ``dirty`` is set when a line held bytes that are not UTF-8 (they are decoded as lone
    surrogates); the caller clears it before each record.
    """

    def __init__(self, lines: _Lines):
        self.lines = lines
        self.first = lines.pos == 0
        self.dirty = False

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        got = self.lines.next()
        if got is None:
            raise StopIteration
        line, overlong = got
        if self.first:
            line = _strip_bom(line)
            self.first = False
        if overlong:
            raise _Overlong(line[:_RAW_TEXT_CHARS].decode("utf-8", "replace"))
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            # UTF-8 never splits a character across b"\n"; bad bytes become lone surrogates.
            self.dirty = True
            return line.decode("utf-8", "surrogateescape")


_SURROGATE = re.compile("[\udc80-\udcff]")


def _has_surrogate(text: str) -> int | None:
    """The byte of the first undecodable UTF-8 byte in ``text``, or None."""
    found = _SURROGATE.search(text)
    return None if found is None else ord(found.group()) - 0xDC00


def _readable(text: str) -> str:
    """Text with undecodable bytes as U+FFFD, fit to show and to store."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", "\ufffd")


def _guarded_next(reader: Iterator[list[str]], limits: Limits) -> list[str]:
    """``next(reader)`` with the process-wide csv field limit set only for the call."""
    old = csv.field_size_limit(limits.max_field_bytes)
    try:
        return next(reader)
    finally:
        csv.field_size_limit(old)


def _csv_reader(f: BinaryIO, start: int, delimiter: str, limits: Limits) -> tuple[_LineFeed, Iterator[list[str]]]:
    feed = _LineFeed(_Lines(f, start, max(8 * limits.max_field_bytes, 64 * KiB)))
    reader = csv.reader(feed, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
    return feed, reader


def _file_delimiter(f: BinaryIO, fmt: str) -> str:
    if fmt == "tsv":
        return "\t"
    f.seek(0)
    head = _strip_bom(f.read(SNIFF_BYTES))
    sample = head[: head.rfind(b"\n") + 1] or head
    return sniff_delimiter(sample.decode("utf-8", "replace"))


def _csv_header(f: BinaryIO, fmt: str, limits: Limits) -> tuple[list[str], int, str]:
    """``(header cells, offset after the header, delimiter)``; refuses an unreadable header."""
    delimiter = _file_delimiter(f, fmt)
    feed, reader = _csv_reader(f, 0, delimiter, limits)
    try:
        cells = _guarded_next(reader, limits)
    except StopIteration:
        raise FileRefused(
            422, "empty_file", "The file is empty: upload a file with a header row and data rows."
        ) from None
    except _Overlong:
        raise FileRefused(422, "unreadable_file", "The header row is too long: check the file is CSV text.") from None
    except csv.Error as exc:
        raise FileRefused(422, "unreadable_file", f"The header row is not valid CSV ({exc}): fix it.") from None
    for cell in cells:
        byte = _has_surrogate(cell)
        if byte is not None:
            raise FileRefused(
                422,
                "not_utf8",
                f"The header row is not valid UTF-8 (byte 0x{byte:02x}): save the file as UTF-8.",
            )
    return [c.strip() for c in cells], feed.lines.pos, delimiter


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
            raise FileRefused(422, "empty_file", "The file is empty: upload a file with a header row and data rows.")
        if first:
            chunk = _strip_bom(chunk)
            first = False
        if chunk.strip():
            return


# --------------------------------------------------------------------------- preflight


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
    ``row_group_too_large``). ``f`` may be positioned anywhere and is left anywhere.
    """
    if fmt not in FORMATS:
        raise FileRefused(
            415, "unsupported_format", f"Format {fmt!r} is not accepted: use one of {', '.join(FORMATS)}."
        )
    _check_not_blank(f)
    if fmt in ("csv", "tsv"):
        columns, _, _ = _csv_header(f, fmt, limits)
        return _check_header(columns, limits)
    if fmt in ("json", "ndjson"):
        return []
    if fmt == "xlsx":
        return _check_header(_xlsx_preflight(f, limits), limits)
    return _check_header(_parquet_preflight(f, limits), limits)


def _detail(exc: BaseException) -> str:
    """An exception as one short line for a message."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__


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
        if info.filename.lower().endswith("sharedstrings.xml") and info.file_size > limits.max_shared_strings_bytes:
            raise FileRefused(413, "too_large_uncompressed", too_big)
    if total > limits.max_uncompressed_bytes:
        raise FileRefused(413, "too_large_uncompressed", too_big)


def _open_sheet(f: BinaryIO, limits: Limits) -> tuple[Any, Any]:
    """``(workbook, first worksheet)`` in read-only mode, after the zip checks."""
    import openpyxl

    _xlsx_zip_checks(f, limits)
    f.seek(0)
    try:
        wb = openpyxl.load_workbook(f, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises anything on a broken part
        raise _unreadable_xlsx(_detail(exc)) from None
    sheets = wb.worksheets
    if not sheets:
        wb.close()
        raise FileRefused(422, "no_worksheet", "The .xlsx file has no worksheet: put the data in its first sheet.")
    return wb, sheets[0]


def _header_cells(values: tuple[Any, ...]) -> list[str]:
    cells = list(values)
    while cells and (cells[-1] is None or (isinstance(cells[-1], str) and not cells[-1].strip())):
        cells.pop()
    return ["" if c is None else str(c).strip() for c in cells]


def _xlsx_preflight(f: BinaryIO, limits: Limits) -> list[str]:
    wb, ws = _open_sheet(f, limits)
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
        except Exception as exc:  # noqa: BLE001
            raise _unreadable_xlsx(f"{_detail(exc)} at row 1") from None
        return _header_cells(first)
    finally:
        wb.close()


def _unreadable_parquet(detail: str) -> FileRefused:
    return FileRefused(
        422, "unreadable_file", f"The parquet file cannot be read ({detail}): write it again and upload it."
    )


def _parquet_file(f: BinaryIO) -> Any:
    import pyarrow.parquet as pq

    f.seek(0)
    try:
        return pq.ParquetFile(f)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise _unreadable_parquet(_detail(exc)) from None


def _parquet_preflight(f: BinaryIO, limits: Limits) -> list[str]:
    pf = _parquet_file(f)
    try:
        md = pf.metadata
        names = list(pf.schema_arrow.names)
        for i in range(md.num_row_groups):
            size = md.row_group(i).total_byte_size
            if size > limits.max_row_group_bytes:
                raise FileRefused(
                    413,
                    "row_group_too_large",
                    f"Row group {i + 1} unpacks to {size // MiB} MiB, more than "
                    f"{limits.max_row_group_bytes // MiB} MiB: write the file with smaller row groups.",
                )
    except FileRefused:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _unreadable_parquet(_detail(exc)) from None
    return names


# --------------------------------------------------------------------------- rows


def read_rows(
    f: BinaryIO, fmt: str, *, checkpoint: dict | None, limits: Limits, size: int
) -> Iterator[tuple[Row, dict]]:
    """Stream the rows of an upload, each with the checkpoint after it.

    ``checkpoint`` is None for the start, else one this function yielded (for the same bytes):
    the rows after it are yielded, nothing lost, nothing repeated. Every checkpoint is a small
    JSON-able dict with ``progress`` (0..1). ``size`` is the file's size in bytes. A part of
    the file that cannot be read raises :class:`FileRefused` (422 ``unreadable_file``, naming
    the row); the rows yielded before it stand.
    """
    checkpoint = dict(checkpoint or {})
    if fmt in ("csv", "tsv"):
        return _csv_rows(f, fmt, checkpoint, limits, size)
    if fmt == "ndjson":
        return _ndjson_rows(f, checkpoint, limits, size)
    if fmt == "json":
        return _json_rows(f, checkpoint, limits, size)
    if fmt == "xlsx":
        return _xlsx_rows(f, checkpoint, limits)
    if fmt == "parquet":
        return _parquet_rows(f, checkpoint)
    raise FileRefused(415, "unsupported_format", f"Format {fmt!r} is not accepted: use one of {', '.join(FORMATS)}.")


def _progress(done: int, total: int) -> float:
    if total <= 0:
        return 1.0
    return round(min(1.0, max(0.0, done / total)), 6)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _ragged(n_values: int, n_columns: int) -> str:
    return f"has {n_values} values, the header has {n_columns} columns"


def _csv_rows(f: BinaryIO, fmt: str, cp: dict, limits: Limits, size: int) -> Iterator[tuple[Row, dict]]:
    header, header_end, delimiter = _csv_header(f, fmt, limits)
    offset = int(cp.get("offset", header_end))
    number = int(cp.get("row", 1))
    feed, reader = _csv_reader(f, offset, delimiter, limits)
    lines = feed.lines
    width = len(header)
    plain_header = all(header) and len(set(header)) == width
    old_limit = csv.field_size_limit()
    while True:
        errors: dict[str, list[str]] | None = None
        values: dict[str, Any] | None = None
        raw: Any = None
        feed.dirty = False
        csv.field_size_limit(limits.max_field_bytes)  # process-wide: set only while reading
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _Overlong as exc:
            cells = None
            errors = {"_row": [f"a line is longer than {8 * limits.max_field_bytes} bytes"]}
            raw = str(exc)
        except csv.Error as exc:
            cells = None
            text = str(exc)
            if "field larger than field limit" in text:
                text = f"a field is longer than {limits.max_field_bytes} characters"
            errors = {"_row": [f"not valid CSV: {text}"]}
        finally:
            csv.field_size_limit(old_limit)
        number += 1
        if cells is not None:
            if plain_header and not feed.dirty and len(cells) == width:
                values = dict(zip(header, cells, strict=True))
                if not "".join(cells).strip():
                    continue  # a wholly empty record
                raw = dict(values)
            else:
                if not "".join(cells).strip():
                    continue  # a wholly empty record
                raw = {
                    (header[i] if i < width and header[i] else f"column {i + 1}"): _readable(c)
                    for i, c in enumerate(cells)
                }
                errors = _csv_row_errors(header, cells, feed.dirty)
                if errors is None:
                    values = {name: cells[i] for i, name in enumerate(header) if name and i < len(cells)}
        new_cp = {"offset": lines.pos, "row": number, "progress": _progress(lines.pos, size)}
        yield Row(number, values, errors, raw), new_cp


def _csv_row_errors(header: list[str], cells: list[str], dirty: bool) -> dict[str, list[str]] | None:
    width = len(header)
    if len(cells) < width or any(c.strip() for c in cells[width:]):
        return {"_row": [_ragged(len(cells), width)]}
    for i, cell in enumerate(cells[:width]):
        byte = _has_surrogate(cell) if dirty else None
        if byte is not None:
            column = header[i] or f"column {i + 1}"
            return {"_row": [f"not valid UTF-8 (byte 0x{byte:02x} in column '{column}')"]}
        if not header[i] and cell.strip():
            return {"_row": [f"has a value in column {i + 1}, which has no header"]}
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _ndjson_rows(f: BinaryIO, cp: dict, limits: Limits, size: int) -> Iterator[tuple[Row, dict]]:
    offset = int(cp.get("offset", 0))
    number = int(cp.get("row", 0))
    lines = _Lines(f, offset, limits.max_field_bytes)
    while True:
        got = lines.next()
        if got is None:
            return
        line, overlong = got
        number += 1
        if lines.pos == len(line):  # the first line of the file
            line = _strip_bom(line)
        new_cp = {"offset": lines.pos, "row": number, "progress": _progress(lines.pos, size)}
        if overlong:
            raw = line[:_RAW_TEXT_CHARS].decode("utf-8", "replace")
            yield Row(number, None, {"_line": [f"longer than {limits.max_field_bytes} bytes"]}, raw), new_cp
            continue
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raw = line.decode("utf-8", "replace").rstrip("\r\n")
            byte = line[exc.start]
            msg = f"not valid UTF-8 (byte 0x{byte:02x} at position {exc.start + 1})"
            yield Row(number, None, {"_line": [msg]}, raw), new_cp
            continue
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or type(exc).__name__
            where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            yield Row(number, None, {"_line": [f"not valid JSON: {msg}{where}"]}, text.rstrip("\r\n")), new_cp
            continue
        if not isinstance(value, dict):
            yield Row(number, None, {"_row": ["not a JSON object"]}, value), new_cp
            continue
        yield Row(number, value, None, value), new_cp


_JSON_MAX_DEPTH = 64
_CONTAINERS = {"start_map": "end_map", "start_array": "end_array"}


class _Unusable:
    """An array item that is not built: too deep, too large, or skipped on resume."""

    def __init__(self, reason: str | None):
        self.reason = reason


def _json_item(first: tuple[str, Any], events: Iterator[tuple[str, Any]], budget: int, build: bool) -> Any:
    """One item of the array from its first event, built from ijson's basic events.

    Built by hand (not ``ijson.items``, whose path prefixes make memory grow with the square
    of the nesting depth): at most ``_JSON_MAX_DEPTH`` levels and about ``budget`` bytes of
    keys and strings; past either, the rest of the item is read and dropped.
    """
    event, value = first
    if event not in _CONTAINERS:
        return value if build else _Unusable(None)
    stack: list[Any] = [{} if event == "start_map" else []] if build else []
    keys: list[Any] = [None]
    depth = 1
    reason: str | None = None if build else ""
    root = stack[0] if build else None
    for event, value in events:
        if event in ("end_map", "end_array"):
            depth -= 1
            if reason is None:
                stack.pop()
                keys.pop()
            if depth == 0:
                return root if reason is None else _Unusable(reason)
            continue
        if event == "start_map" or event == "start_array":
            depth += 1
            if reason is None and depth > _JSON_MAX_DEPTH:
                reason, stack, keys, root = f"nested more than {_JSON_MAX_DEPTH} levels deep", [], [], None
        if reason is not None:
            continue
        if event == "map_key":
            budget -= len(value) + 8
            keys[-1] = value
        else:
            if event == "start_map" or event == "start_array":
                item: Any = {} if event == "start_map" else []
            else:
                item = value
                budget -= (len(value) if isinstance(value, str) else 0) + 8
            parent = stack[-1]
            if isinstance(parent, dict):
                parent[keys[-1]] = item
            else:
                parent.append(item)
            if event == "start_map" or event == "start_array":
                stack.append(item)
                keys.append(None)
        if budget < 0:
            reason, stack, keys, root = "larger than the limit for one item", [], [], None
    raise ValueError("the file ends inside an item")


def _json_rows(f: BinaryIO, cp: dict, limits: Limits, size: int) -> Iterator[tuple[Row, dict]]:
    import ijson

    skip = int(cp.get("items", 0))
    f.seek(0)
    head = f.read(3)
    f.seek(3 if head == codecs.BOM_UTF8 else 0)
    events = ijson.basic_parse(f, use_float=True)
    number = 0
    budget = 8 * limits.max_field_bytes
    try:
        first = next(events, None)
        if first is None or first[0] != "start_array":
            raise FileRefused(
                422, "unreadable_file", "The file is not one JSON array of objects: upload [{...}, {...}] or NDJSON."
            )
    except FileRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - ijson's JSONError, IncompleteJSONError, ...
        raise _bad_json(number, exc) from None
    while True:
        try:
            event = next(events)
            if event[0] == "end_array":
                for _ in events:  # only whitespace may follow; ijson raises on anything else
                    raise ValueError("more data after the array")
                return
            item = _json_item(event, events, budget, build=number >= skip)
        except Exception as exc:  # noqa: BLE001 - ijson's JSONError, IncompleteJSONError, ...
            raise _bad_json(number, exc) from None
        number += 1
        if number <= skip:
            continue
        try:
            pos = f.tell()
        except (OSError, ValueError):
            pos = 0
        new_cp = {"items": number, "progress": _progress(pos, size)}
        if isinstance(item, _Unusable):
            yield Row(number, None, {"_row": [f"not usable: {item.reason}"]}, None), new_cp
        elif not isinstance(item, dict):
            yield Row(number, None, {"_row": ["not a JSON object"]}, item), new_cp
        else:
            yield Row(number, item, None, item), new_cp


def _bad_json(number: int, exc: BaseException) -> FileRefused:
    return FileRefused(
        422,
        "unreadable_file",
        f"The file is not valid JSON after item {number} ({_detail(exc)}): "
        "fix it from there and upload the rest again.",
    )


def _jsonable(value: Any) -> Any:
    """A cell as JSON-able data, for ``Row.raw``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (timedelta, Decimal)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[:_RAW_TEXT_CHARS]).decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _xlsx_rows(f: BinaryIO, cp: dict, limits: Limits) -> Iterator[tuple[Row, dict]]:
    wb, ws = _open_sheet(f, limits)
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
        rows = ws.iter_rows(min_row=number + 1, values_only=True)
        while True:
            try:
                values = next(rows)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - a corrupt part found mid-file
                raise _unreadable_xlsx(f"{_detail(exc)} at row {number + 1}") from None
            number += 1
            if number > limits.max_sheet_rows:
                raise FileRefused(
                    413, "too_many_rows", f"The sheet has more than {limits.max_sheet_rows} rows: split it."
                )
            new_cp = {"row": number, "progress": _progress(number, max_row)}
            cells = list(values)
            while cells and _blank(cells[-1]):
                cells.pop()
            if not cells:
                continue
            yield _xlsx_row(number, header, cells), new_cp
    finally:
        wb.close()


def _xlsx_row(number: int, header: list[str], cells: list[Any]) -> Row:
    width = len(header)
    raw = {(header[i] if i < width and header[i] else f"column {i + 1}"): _jsonable(c) for i, c in enumerate(cells)}
    for i, cell in enumerate(cells):
        if _blank(cell):
            continue
        if i >= width or not header[i]:
            return Row(number, None, {"_row": [f"has a value in column {i + 1}, which has no header"]}, raw)
    values = {name: (cells[i] if i < len(cells) else None) for i, name in enumerate(header) if name}
    return Row(number, values, None, raw)


def _column_values(column: Any) -> list[Any]:
    """A pyarrow column as Python values; a value that cannot be converted is a :class:`_Bad`."""
    import pyarrow as pa

    if pa.types.is_timestamp(column.type) and column.type.unit == "ns":
        try:
            column = column.cast(pa.timestamp("us", tz=column.type.tz), safe=False)
        except Exception:  # noqa: BLE001 - fall back to value by value
            pass
    try:
        return column.to_pylist()
    except Exception:  # noqa: BLE001
        out: list[Any] = []
        for scalar in column:
            try:
                out.append(scalar.as_py())
            except Exception as exc:  # noqa: BLE001
                out.append(_Bad(_detail(exc)))
        return out


class _Bad:
    def __init__(self, reason: str):
        self.reason = reason

    def __str__(self) -> str:
        return f"<unreadable: {self.reason}>"


def _parquet_batches(pf: Any, groups: range) -> Iterator[Any]:
    """Record batches one row group at a time, so that a batch never spans two groups and a
    corrupt group is found after the rows of the groups before it."""
    for group in groups:
        yield from pf.iter_batches(batch_size=_BATCH, row_groups=[group], use_threads=False)


def _parquet_rows(f: BinaryIO, cp: dict) -> Iterator[tuple[Row, dict]]:
    pf = _parquet_file(f)
    try:
        md = pf.metadata
        total = md.num_rows
        counts = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    except Exception as exc:  # noqa: BLE001
        raise _unreadable_parquet(_detail(exc)) from None
    done = int(cp.get("rows", 0))
    group, before = 0, 0
    while group < len(counts) and before + counts[group] <= done:
        before += counts[group]
        group += 1
    if group >= len(counts):
        return
    skip = done - before
    number = before
    batches = _parquet_batches(pf, range(group, len(counts)))
    while True:
        try:
            batch = next(batches)
            names = batch.schema.names
            columns = [_column_values(batch.column(i)) for i in range(batch.num_columns)]
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a corrupt page found mid-file
            raise _unreadable_parquet(f"{_detail(exc)} at row {number + 1}") from None
        for r in range(batch.num_rows):
            number += 1
            if skip:
                skip -= 1
                continue
            values = {name: columns[c][r] for c, name in enumerate(names)}
            raw = {name: _jsonable(v) if not isinstance(v, _Bad) else str(v) for name, v in values.items()}
            bad = [name for name, v in values.items() if isinstance(v, _Bad)]
            new_cp = {"rows": number, "progress": _progress(number, total)}
            if bad:
                msg = f"column '{bad[0]}' cannot be read ({values[bad[0]].reason})"
                yield Row(number, None, {"_row": [msg]}, raw), new_cp
            else:
                yield Row(number, values, None, raw), new_cp
