"""csv and tsv: the delimiter sniffed, the header, and the rows resumed by byte offset."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from etl_app.uploads.formats.common import (
    _RAW_TEXT_CHARS,
    FileRefused,
    KiB,
    Limits,
    Row,
    _empty_file,
    _progress,
    _strip_bom,
    capped_raw,
    row_too_large,
    value_size,
)
from etl_app.uploads.formats.lines import _Lines

SNIFF_BYTES = 64 * KiB
_DELIMITERS = (",", "\t", ";", "|")


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


def _sniff_head(head: bytes) -> str:
    """The delimiter of a file's first bytes (BOM dropped): its complete lines, else all of it."""
    sample = head[: head.rfind(b"\n") + 1] or head
    return sniff_delimiter(sample.decode("utf-8", "replace"))


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
    return _sniff_head(_strip_bom(f.read(SNIFF_BYTES)))


def _csv_header(f: BinaryIO, fmt: str, limits: Limits) -> tuple[list[str], int, str]:
    """``(header cells, offset after the header, delimiter)``; refuses an unreadable header."""
    delimiter = _file_delimiter(f, fmt)
    feed, reader = _csv_reader(f, 0, delimiter, limits)
    try:
        cells = _guarded_next(reader, limits)
    except StopIteration:
        raise _empty_file() from None
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
        row_size = 0
        feed.dirty = False
        csv.field_size_limit(limits.max_field_bytes)  # process-wide: set only while reading
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _Overlong as exc:
            cells = None
            errors = {
                "_row": [f"a line is longer than {8 * limits.max_field_bytes} bytes (8 × ETL_UPLOAD_MAX_FIELD_BYTES)"]
            }
            raw = str(exc)
        except csv.Error as exc:
            cells = None
            text = str(exc)
            if "field larger than field limit" in text:
                text = f"a field is longer than {limits.max_field_bytes} characters (ETL_UPLOAD_MAX_FIELD_BYTES)"
            errors = {"_row": [f"not valid CSV: {text}"]}
        finally:
            csv.field_size_limit(old_limit)
        number += 1
        if cells is not None:
            joined = "".join(cells)
            if not joined.strip():
                continue  # a wholly empty record
            row_size = len(joined)
            if plain_header and not feed.dirty and len(cells) == width:
                # the usual row: raw is its values, one dict (no reader or caller changes either)
                values = raw = dict(zip(header, cells, strict=False))  # the lengths match
            else:
                raw = {
                    (header[i] if i < width and header[i] else f"column {i + 1}"): _readable(c)
                    for i, c in enumerate(cells)
                }
                errors = _csv_row_errors(header, cells, feed.dirty)
                if errors is None:
                    values = {name: cells[i] for i, name in enumerate(header) if name and i < len(cells)}
            if row_size > limits.max_row_bytes:  # a record may span many lines
                values, errors = None, {"_row": [row_too_large(row_size, limits)]}
                raw = capped_raw(raw, {name: value_size(v) for name, v in raw.items()}, limits)
        new_cp = {"offset": lines.pos, "row": number, "progress": _progress(lines.pos, size)}
        yield Row(number, values, errors, raw, row_size), new_cp


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
