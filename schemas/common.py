"""Strict fields and the base schema shared by every record type.

Rules (docs/record-types.md "General rules", docs/api.md "Errors"):
- Unknown fields are errors (``unknown = RAISE``), except ``source`` (free text, at most
  200 chars, kept in lineage) and ``event_time`` (an optional timestamp), which every
  type accepts. A record type's schema contract may keep or drop unknown fields, or null a
  wrong-typed optional value, before the schema sees the record
  (:mod:`etl_app.record_types.contract`); the schema itself always refuses them. An unknown
  field's name is reported with NUL and lone surrogates backslash-escaped and cut to 100 chars,
  so error bodies stay valid JSON/jsonb text.
- Optional fields: absent, ``null`` and (for strings and ids) an empty or all-space string
  all give the field's default (``None`` unless documented, e.g. ``no_show`` is False), so
  every column key is present in the loaded dict. Required fields: absent is
  "Missing data for required field.", ``null`` is "Field may not be null.", an empty
  string is "Must not be empty.". List items behave as required strings.
- Strings are stripped (``str.strip``: Unicode whitespace); lengths are counted after
  stripping, in code points; as sent, a string or id may hold at most ``RAW_PADDING`` more
  characters (the spaces around it). A string containing NUL or a lone surrogate (not
  encodable as UTF-8) is a field error. Other control characters are kept.
- Enums are exact and case-sensitive after stripping ("Active" is an error).
- Ids: 1..64 characters of ``[A-Za-z0-9_.:-]`` after stripping.
- Integers are strict: JSON integers only; a float with no fraction (``5.0``) is
  accepted as 5; bools, fractional floats, NaN/Infinity and numeric strings ("5") are
  errors. Every integer must also fit a PostgreSQL ``integer`` (-2**31 .. 2**31-1).
- Numbers: JSON int or float, output as float; bools, strings, NaN, +/-Infinity (what
  ``1e400`` parses to) and ints too large for a float are errors.
- Booleans are strict: only JSON ``true``/``false`` (no 0/1, no "true").
- Numbers, booleans and dates given as strings are errors: callers that parse text
  (CSV, XLSX) must convert cells to JSON types before validation.
- Timestamps: ISO 8601 extended calendar format, ``YYYY-MM-DD[T ]HH:MM[:SS[.fraction]]``
  with an optional ``Z`` or ``+HH[:MM]`` offset (``T``/``Z`` in either case) of at most
  ±15:59, the most PostgreSQL stores (real zones span −12:00..+14:00; ``+20:00``, which
  Python reads, would fail the record at persist); a date alone, week dates and the basic
  format are errors. A naive timestamp is UTC; a given
  offset is kept (fixed-offset tzinfo) so calendar fields are read in it. Fractions
  beyond microseconds are truncated. The year, as written, must be 1900..2100.
- Days: exactly ``YYYY-MM-DD`` (ASCII digits), year 1900..2100, giving a ``date``.
- Timestamps and days are not stripped: one with spaces around the value is an error, as their
  formats in the OpenAPI document say; an empty one is absent in an optional field, as any empty
  string is (the document offers it beside the format).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from typing import Any, ClassVar

import marshmallow as ma
from marshmallow import fields, pre_load, validate

MIN_YEAR, MAX_YEAR = 1900, 2100
RAW_PADDING = 64  # characters a string or id may carry around its value, as sent (they are stripped)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIMESTAMP_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
    r"([Zz]|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)?"
)  # offsets to ±15:59, what PostgreSQL's timestamptz takes (Python's go to ±23:59)

TEXT_ERRORS = {
    "invalid": "Not a valid string.",
    "empty": "Must not be empty.",
    "nul": "Must not contain NUL characters.",
    "surrogate": "Must be valid Unicode (no lone surrogates).",
    "too_long": "Longer than maximum length {max}.",
    "too_long_raw": "Longer than {max} characters, the spaces around it included.",
}


def text_problem(value: str) -> str | None:
    """The error key for a string PostgreSQL text cannot hold, or None."""
    if "\x00" in value:
        return "nul"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "surrogate"
    return None


class _OptionalMixin:
    """Optional fields default to None; ``null`` on an optional field means "absent"."""

    def __init__(self, *args: Any, required: bool = False, **kwargs: Any) -> None:
        if not required:
            kwargs.setdefault("load_default", None)
        super().__init__(*args, required=required, **kwargs)  # type: ignore[call-arg]

    def deserialize(self, value: Any, attr: str | None = None, data: Any = None, **kwargs: Any) -> Any:
        if value is None and not self.required:  # type: ignore[attr-defined]
            value = ma.missing
        return super().deserialize(value, attr, data, **kwargs)  # type: ignore[misc]


class _Text(_OptionalMixin, fields.Field):
    """Shared string handling: type, NUL and surrogate checks, stripping, empty."""

    default_error_messages: ClassVar[dict[str, str]] = TEXT_ERRORS
    max_raw = 64 + RAW_PADDING  # characters as sent

    def _clean(self, value: Any) -> str | None:
        """The stripped string, or None for an empty one in an optional field."""
        if not isinstance(value, str):
            raise self.make_error("invalid")
        problem = text_problem(value)
        if problem:
            raise self.make_error(problem)
        if len(value) > self.max_raw:
            raise self.make_error("too_long_raw", max=self.max_raw)
        value = value.strip()
        if not value:
            if self.required:
                raise self.make_error("empty")
            return None
        return value

    def _validate(self, value: Any) -> None:
        if value is not None:  # an empty optional string became None: nothing to check
            super()._validate(value)


class Str(_Text):
    """A stripped string of at most ``max_length`` characters."""

    def __init__(self, max_length: int = 200, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length
        self.max_raw = max_length + RAW_PADDING

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        value = self._clean(value)
        if value is not None and len(value) > self.max_length:
            raise self.make_error("too_long", max=self.max_length)
        return value


class Id(_Text):
    """An id: 1..64 characters of ``[A-Za-z0-9_.:-]``."""

    default_error_messages: ClassVar[dict[str, str]] = {"bad_id": "Must be 1 to 64 characters of A-Z a-z 0-9 _ . : -"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        value = self._clean(value)
        if value is not None and not _ID_RE.fullmatch(value):
            raise self.make_error("bad_id")
        return value


def Enum(*choices: str, **kwargs: Any) -> Str:
    """A string that must be one of ``choices`` (exact, case-sensitive, after stripping)."""
    return Str(validate=validate.OneOf(choices), **kwargs)


EMAIL_MAX_LENGTH = 254  # RFC 5321: a path of at most 256 octets, less the angle brackets
EMAIL_LOCAL_MAX_LENGTH = 64  # RFC 5321 4.5.3.1.1: the part before the "@"


def _local_part_length(value: str) -> None:
    if len(value.rpartition("@")[0]) > EMAIL_LOCAL_MAX_LENGTH:
        raise ma.ValidationError(f"The part before @ must be at most {EMAIL_LOCAL_MAX_LENGTH} characters.")


def Email(**kwargs: Any) -> Str:
    """An email address (marshmallow's Email validator) of at most 254 characters, at most 64
    of them before the last "@" (the limits of RFC 5321, counted in characters)."""
    return Str(max_length=EMAIL_MAX_LENGTH, validate=[validate.Email(), _local_part_length], **kwargs)


class StrList(_OptionalMixin, fields.List):
    """A list of non-empty stripped strings; the item count is checked on the input list."""

    default_error_messages: ClassVar[dict[str, str]] = {"count": "Must have between {min} and {max} items."}

    def __init__(self, *, item_max_length: int, min_items: int = 0, max_items: int, **kwargs: Any) -> None:
        super().__init__(Str(max_length=item_max_length, required=True), **kwargs)
        self.min_items, self.max_items = min_items, max_items

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if isinstance(value, list) and not self.min_items <= len(value) <= self.max_items:
            raise self.make_error("count", min=self.min_items, max=self.max_items)
        return super()._deserialize(value, attr, data, **kwargs)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class StrictInt(_OptionalMixin, fields.Field):
    """A JSON integer (or a float without fraction) that fits a PostgreSQL ``integer``."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "Not a valid integer.",
        "range": "Must be between {min} and {max}.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not _is_number(value):
            raise self.make_error("invalid")
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise self.make_error("invalid")
            value = int(value)
        if not INT32_MIN <= value <= INT32_MAX:
            raise self.make_error("range", min=INT32_MIN, max=INT32_MAX)
        return value


class Number(_OptionalMixin, fields.Field):
    """A finite JSON number, as float."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "Not a valid number.",
        "finite": "Must be a finite number (no NaN or Infinity).",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if not _is_number(value):
            raise self.make_error("invalid")
        try:
            value = float(value)
        except OverflowError:
            raise self.make_error("finite") from None
        if not math.isfinite(value):
            raise self.make_error("finite")
        return value


class StrictBool(_OptionalMixin, fields.Field):
    """JSON ``true`` or ``false`` only."""

    default_error_messages: ClassVar[dict[str, str]] = {"invalid": "Not a valid boolean (use true or false)."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class _Temporal(_Text):
    default_error_messages: ClassVar[dict[str, str]] = {"year": f"Year must be between {MIN_YEAR} and {MAX_YEAR}."}
    max_raw = 2**31  # their formats bound a value's length
    max_blank = 64  # an empty one, as sent (the OpenAPI document's maxLength)

    def _clean(self, value: Any) -> str | None:
        """The value as sent, not stripped: an empty (or all-space) one is absent in an optional
        field, as any empty string is; spaces around a value make it invalid."""
        if isinstance(value, str) and value.strip() and value != value.strip():
            raise self.make_error("invalid")
        if isinstance(value, str) and not value.strip() and len(value) > self.max_blank:
            raise self.make_error("too_long_raw", max=self.max_blank)
        return super()._clean(value)

    def _check_year(self, year: int) -> None:
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise self.make_error("year")


class Timestamp(_Temporal):
    """An ISO 8601 timestamp as an aware datetime (naive means UTC; offsets are kept)."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "Not a valid ISO 8601 timestamp (YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|+HH:MM]).",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime | None:
        text = self._clean(value)
        if text is None:
            return None
        if not _TIMESTAMP_RE.fullmatch(text):
            raise self.make_error("invalid")
        self._check_year(int(text[:4]))
        text = text.replace("t", "T").replace("z", "Z")
        try:
            result = datetime.fromisoformat(text)
        except ValueError:
            raise self.make_error("invalid") from None
        if result.tzinfo is None:
            result = result.replace(tzinfo=UTC)
        return result


class Day(_Temporal):
    """A ``YYYY-MM-DD`` calendar date."""

    default_error_messages: ClassVar[dict[str, str]] = {"invalid": "Not a valid date (YYYY-MM-DD)."}
    max_blank = 10

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date | None:
        text = self._clean(value)
        if text is None:
            return None
        if not _DAY_RE.fullmatch(text):
            raise self.make_error("invalid")
        self._check_year(int(text[:4]))
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise self.make_error("invalid") from None


def safe_key(key: Any) -> str:
    """A field name fit to appear in an error body (and in jsonb): escaped, at most 100 chars."""
    text = str(key).replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 100 else text[:100] + "..."


class RecordSchema(ma.Schema):
    """Base of every record type's schema: strict, flat, with ``source`` and ``event_time``."""

    class Meta:
        unknown = ma.RAISE

    source = Str(max_length=200)
    event_time = Timestamp()

    @pre_load
    def _safe_unknown_keys(self, data: Any, **kwargs: Any) -> Any:
        """Unknown keys are errors; escape them so the error names stay valid text."""
        if isinstance(data, dict) and any(k not in self.load_fields for k in data):
            return {k if k in self.load_fields else safe_key(k): v for k, v in data.items()}
        return data
