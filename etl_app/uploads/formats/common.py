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
    """

    max_uncompressed_bytes: int = 1 * GiB
    max_compression_ratio: int = 200
    max_sheet_rows: int = 1_048_576
    max_columns: int = 16_384
    max_row_group_bytes: int = 256 * MiB
    max_field_bytes: int = 1 * MiB
    max_shared_strings_bytes: int = 32 * MiB
    max_shared_strings: int = 1_000_000

    @classmethod
    def of(cls, settings: Any) -> Limits:
        """The caps, with those the environment sets (an :class:`etl_app.config.Settings`)."""
        return cls(
            max_shared_strings_bytes=settings.upload_max_shared_strings_bytes,
            max_shared_strings=settings.upload_max_shared_strings,
        )


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
    return round(min(1.0, max(0.0, done / total)), 6)


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
