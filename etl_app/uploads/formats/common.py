"""What all upload formats share: the format names, the caps, the refusal of a file, the row and small helpers."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

FORMATS = ("csv", "tsv", "json", "ndjson", "xlsx", "parquet")

KiB, MiB, GiB = 1024, 1024**2, 1024**3
_CHUNK = 64 * KiB
_RAW_TEXT_CHARS = 10_000
EXPANSION_FLOOR = 64 * MiB


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
    - ``max_shared_strings_bytes`` (32 MiB, ``ETL_UPLOAD_MAX_SHARED_STRINGS_BYTES``) and
      ``max_shared_strings`` (1 000 000, ``ETL_UPLOAD_MAX_SHARED_STRINGS``): xlsx, the
      uncompressed size of the shared-strings part (the distinct texts of the cells) and the
      number of its strings; the worker holds their texts, the web request only counts them.
    - ``max_field_bytes`` is also every format's cap on one value (an xlsx cell, a parquet
      value or list element, a JSON string): a value over it makes its row an error naming the
      column; the value is measured, never copied into the row's ``raw``.
    - ``max_row_bytes`` (8 MiB): the values of one row added up.
    - ``max_decoded_bytes`` (1000 MiB): the values of the whole upload added up, oversized ones
      included; past it the file is refused from that row on (413 ``too_large_decoded``).
    - ``max_expansion`` (200): the values of the whole upload may also add up to at most this
      many times the file's size (or ``EXPANSION_FLOOR``, 64 MiB, if more): a small file whose
      one value is referenced by every row is refused from the row that passes it (413
      ``too_large_decoded``), as a zip bomb is.
    - ``max_rows`` (1 048 576): the rows of one upload; past it the file is refused from that
      row on (413 ``too_many_rows``), a parquet file whose footer declares more is refused whole.

    Sizes are in characters for text and in bytes for anything else (binary values; 8 for a
    number, a date or a boolean).
    """

    max_uncompressed_bytes: int = 1 * GiB
    max_compression_ratio: int = 200
    max_sheet_rows: int = 1_048_576
    max_columns: int = 16_384
    max_row_group_bytes: int = 256 * MiB
    max_field_bytes: int = 1 * MiB
    max_shared_strings_bytes: int = 32 * MiB
    max_shared_strings: int = 1_000_000
    max_row_bytes: int = 8 * MiB
    max_decoded_bytes: int = 1000 * MiB
    max_expansion: int = 200
    max_rows: int = 1_048_576

    def decoded_cap(self, size: int) -> int:
        """What the values of a file of ``size`` bytes may add up to."""
        return min(self.max_decoded_bytes, max(EXPANSION_FLOOR, self.max_expansion * size))


@dataclass
class Row:
    """One row of an upload.

    ``number``: csv/tsv/xlsx the spreadsheet row number (header = 1, first data row = 2);
    ndjson the 1-based line number; json and parquet the 1-based item number.
    ``values``: keyed by the file's own column names (json: the object as is); None when the
    row is unusable. ``errors``: the row-level problem (``{"_row": [...]}`` or
    ``{"_line": [...]}``), else None. ``raw``: the values as received, JSON-able (a dict of
    column to cell for flat formats, the line text for a bad line). ``size``: what the row's
    values add up to (see :class:`Limits`), counted against ``max_decoded_bytes``.
    """

    number: int
    values: dict[str, Any] | None
    errors: dict[str, list[str]] | None
    raw: Any
    size: int = 0


class CellsRow(Row):
    """A row whose ``raw`` is its ``values`` made JSON-able (:func:`_jsonable`) only when read:
    an accepted row's raw is never read, so a reader of typed cells (parquet: datetimes,
    decimals) does not convert each cell twice."""

    @property  # type: ignore[override]
    def raw(self) -> Any:
        if self._raw is None and self.values is not None:
            self._raw = {name: _jsonable(v) for name, v in self.values.items()}
        return self._raw

    @raw.setter
    def raw(self, value: Any) -> None:
        self._raw = value


_SCALAR_SIZE = 8


def value_size(value: Any) -> tuple[int, int]:
    """``(total, largest)``: the size of a Python value (containers added up) and of its
    largest text or binary part; characters for text, bytes for binary, 8 for anything else."""
    if value is None:
        return 0, 0
    if isinstance(value, (str, bytes, bytearray)):
        return len(value), len(value)
    if isinstance(value, (dict, list, tuple)):
        total = largest = 0
        for v in value.values() if isinstance(value, dict) else value:
            t, big = value_size(v)
            total += t
            largest = max(largest, big)
        if isinstance(value, dict):
            keys = sum(len(str(k)) for k in value)
            total += keys
        return total, largest
    return _SCALAR_SIZE, _SCALAR_SIZE


def too_large(column: str, size: int, limits: Limits) -> str:
    """The row error of a value over ``max_field_bytes``."""
    return (
        f"column '{column}' holds a value of size {size}, over the cap of {limits.max_field_bytes} "
        "(ETL_UPLOAD_MAX_FIELD_BYTES)"
    )


def row_too_large(size: int, limits: Limits) -> str:
    """The row error of a row whose values add up to more than ``max_row_bytes``."""
    return f"the row's values add up to size {size}, over the cap of {limits.max_row_bytes} (ETL_UPLOAD_MAX_ROW_BYTES)"


def oversized(size: int) -> str:
    """What ``Row.raw`` shows in place of a value too large to keep."""
    return f"<a value of size {size}, not kept>"


def cap_errors(columns: dict[str, tuple[int, int]], limits: Limits) -> tuple[int, dict[str, list[str]] | None]:
    """``(row size, errors)`` of a row from each column's ``(total, largest)`` size."""
    size = sum(total for total, _ in columns.values())
    for name, (_, largest) in columns.items():
        if largest > limits.max_field_bytes:
            return size, {"_row": [too_large(name, largest, limits)]}
    if size > limits.max_row_bytes:
        return size, {"_row": [row_too_large(size, limits)]}
    return size, None


def raw_keeps(limits: Limits) -> int:
    """The largest value a row over a cap keeps in its ``raw``."""
    return min(limits.max_field_bytes, _RAW_TEXT_CHARS)


def capped_raw(values: dict[str, Any], columns: dict[str, tuple[int, int]], limits: Limits) -> dict[str, Any]:
    """``Row.raw`` of a row over a cap: its small values as they are, the large ones as a note."""
    keep = raw_keeps(limits)
    return {
        name: _jsonable(v) if columns[name][0] <= keep else oversized(columns[name][0]) for name, v in values.items()
    }


def _empty_file() -> FileRefused:
    return FileRefused(422, "empty_file", "The file is empty: upload a file with a header row and data rows.")


def _strip_bom(data: bytes) -> bytes:
    return data[3:] if data.startswith(codecs.BOM_UTF8) else data


def _detail(exc: BaseException) -> str:
    """An exception as one short line for a message."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _progress(done: int, total: int) -> float:
    if total <= 0:
        return 1.0
    if 0 <= done <= total:  # always, for a reader's own offsets: no clamping
        return round(done / total, 6)
    return 0.0 if done < 0 else 1.0


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


def object_row(number: int, obj: dict, limits: Limits) -> Row:
    """The row of a JSON object (a json array's item, an ndjson line), its values measured
    against the caps: a value over them makes the row an error naming its key."""
    sizes = {str(k): value_size(v) for k, v in obj.items()}
    size, errors = cap_errors(sizes, limits)
    if errors:
        return Row(number, None, errors, capped_raw({str(k): v for k, v in obj.items()}, sizes, limits), size)
    return Row(number, obj, None, obj, size)
