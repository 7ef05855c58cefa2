"""The values of a flat file's row (csv, tsv, xlsx, parquet) made into a payload for a schema.

Flat formats give text cells (csv/tsv), typed cells (xlsx: numbers, bools, datetimes) or typed
columns (parquet); the schemas are strict JSON (``schemas.common``: no "5" for an integer, no
"true" for a boolean). :func:`coerce` bridges them, driven by the schema's field classes:

- Column names are matched to the schema's fields by :func:`normalise` (case-insensitive,
  trimmed, spaces and dashes as underscores: "Session Number" is ``session_number``). A column
  matching no field is kept under its normalised name, so the schema's unknown-field rule
  rejects the row naming it (only when its cell holds a value: an empty cell of an unknown
  column is dropped). A column whose header starts with ``_`` is a note (the
  rejections download adds ``_row`` and ``_errors``) and is dropped; so is a column with no
  header.
- An empty cell ('', only spaces, or None) is null: the key is kept with ``None``. An optional
  field then takes its default (as if absent); a required one is "Field may not be null.".
- Lists (``subjects``, ``improvement_areas``): a cell holding a JSON array (``["a", "b"]``) is
  that array; other text is split on ``;``, each piece stripped, empty pieces dropped
  (``"math; physics;"`` is ``["math", "physics"]``). A list value (parquet) passes as is.
- Booleans: text ``true/false/yes/no/1/0`` (any case, trimmed) and the numbers 1 and 0; any
  other value is left as it is, so the schema reports it.
- Integers and numbers: numeric text (``"42"``, ``"-1.5"``, ``"1e3"``) becomes a number;
  Decimal becomes int or float; other text is left for the schema to report.
- Text fields (strings, ids, enums, emails): a number becomes its text (an Excel id typed as
  1001 is ``"1001"``; a whole float 1001.0 is ``"1001"``).
- A text cell starting with a single quote followed by ``=``, ``+``, ``-``, ``@``, a tab or a
  carriage return loses that quote: it is how the rejections download (:func:`neutralise`)
  keeps a spreadsheet from reading such a value as a formula, so the corrected file is uploaded
  as it was downloaded. A number (``-5``, ``+1.5``) is never quoted.
- Dates and times (openpyxl and pyarrow give ``datetime``, ``date``, ``time``): ISO 8601 text.
  Naive datetimes stay naive (the schema reads naive as UTC), aware ones keep their offset. For
  a date field (``Day``) a datetime at midnight (how Excel stores a date) is its date.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from marshmallow import fields as ma_fields

from etl_app.record_types import RecordType
from schemas.common import Day, Id, Number, Str, StrictBool, StrictInt, Timestamp

_SPACES = re.compile(r"[\s\-]+")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_BOOL_TEXT = {**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)}


def normalise(name: str) -> str:
    """A column name as a field name: trimmed, lower case, spaces and dashes as underscores."""
    return _SPACES.sub("_", str(name).strip()).casefold()


def neutralise(text: str) -> str:
    """A cell a spreadsheet would read as a formula (it starts with ``=``, ``+``, ``-``, ``@``, a
    tab or a carriage return, OWASP's list) with a single quote in front; numbers as they are."""
    if text.startswith(_FORMULA_START) and not _FLOAT_RE.fullmatch(text):
        return "'" + text
    return text


def _unquote(value: Any) -> Any:
    """A cell that :func:`neutralise` quoted, as it was."""
    if isinstance(value, str) and value.startswith("'") and value[1:2] and value[1] in _FORMULA_START:
        return value[1:]
    return value


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _iso(value: datetime | date | time) -> str:
    return value.isoformat()


def _to_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():  # the usual cell: ascii digits, no sign
            return int(text) if len(text) <= 20 else value
        if _INT_RE.fullmatch(text):
            return int(text) if len(text) <= 20 else value
        if _FLOAT_RE.fullmatch(text):
            number = float(text)
            return number if math.isfinite(number) else value
    return value


def _to_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        exact = _BOOL_TEXT.get(value)  # the usual cell, written as the bench and exports write it
        if exact is not None:
            return exact
        text = value.strip().casefold()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return value


def _to_list(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                return value
            return parsed
        return [piece.strip() for piece in text.split(";") if piece.strip()]
    return value


def _to_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Decimal) and value.is_finite():
        return str(int(value)) if value == value.to_integral_value() else str(value)
    return value


def _to_day(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.time() == time(0) and value.tzinfo is None:
            return value.date().isoformat()
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _dates_then(then: Any) -> Any:
    def convert(value: Any) -> Any:
        if isinstance(value, (datetime, date, time)):
            return _iso(value)
        return then(value)

    return convert


def _other(value: Any) -> Any:
    return _to_number(value) if isinstance(value, Decimal) else value


_TEXT = _dates_then(_to_text)
_OTHER = _dates_then(_other)


def _converter(field: ma_fields.Field | None) -> Any:
    """The conversion of a (non-blank, unquoted) cell for ``field``: one function per field,
    chosen once per file header instead of once per cell."""
    if isinstance(field, ma_fields.List):
        return _to_list
    if isinstance(field, StrictBool):
        return _to_bool
    if isinstance(field, (StrictInt, Number)):
        return _to_number
    if isinstance(field, Day):
        return _to_day
    if isinstance(field, (Str, Id, Timestamp)):
        return _TEXT
    return _OTHER


# The conversions that leave text as it is: a text cell of their fields is kept without a call.
_KEEPS_TEXT = frozenset({_TEXT, _OTHER, _to_day})

# A column of a header: its field name, its conversion, the conversion of a text cell (None when
# the text is kept as it is), and whether a cell of it with nothing in it is dropped (an unknown
# column) rather than kept as null; None for a column that is skipped.
_Column = tuple[str, Any, Any, bool] | None
# keyed by the schema's fields' id and the header; each entry holds the fields themselves, so the
# id is not reused while the entry lives
_PLANS: dict[tuple[int, tuple], tuple[dict, tuple[_Column, ...]]] = {}
_MAX_PLANS = 64


def _plan(record_type: RecordType, columns: tuple) -> tuple[_Column, ...]:
    """How each column of a header is coerced for ``record_type`` (kept for the next rows of the
    same header: a few files' headers at a time)."""
    load_fields = record_type.loader.load_fields
    key = (id(load_fields), columns)
    cached = _PLANS.get(key)
    if cached is not None and cached[0] is load_fields:
        return cached[1]
    out: list[_Column] = []
    for column in columns:
        name = str(column).strip()
        if not name or name.startswith("_"):
            out.append(None)
            continue
        name = normalise(name)
        field = load_fields.get(name)
        convert = _converter(field)
        out.append((name, convert, None if convert in _KEEPS_TEXT else convert, field is None))
    plan = tuple(out)
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = (load_fields, plan)
    return plan


def coerce(record_type: RecordType, values: dict[str, Any]) -> dict[str, Any]:
    """The payload of one flat row for ``record_type``'s schema (see the module's rules)."""
    payload: dict[str, Any] = {}
    for column, value in zip(_plan(record_type, tuple(values)), values.values(), strict=True):
        if column is None:
            continue
        key, convert, convert_text, unknown = column
        if value.__class__ is str:  # most cells (csv, tsv: all): _blank and _unquote inlined
            if not value or value.isspace():
                if not unknown:
                    payload[key] = None
                continue  # an empty cell of an unknown column carries nothing to reject
            if value[0] == "'" and value[1:2] and value[1] in _FORMULA_START:
                value = value[1:]
                if value.isspace():
                    payload[key] = None
                    continue
            payload[key] = value if convert_text is None else convert_text(value)
            continue
        if unknown and value is None:
            continue
        value = _unquote(value)
        payload[key] = None if _blank(value) else convert(value)
    return payload
