"""A record type's schema contract: what happens to unknown fields and to wrong-typed optional values.

Each :class:`~etl_app.record_types.RecordType` declares a :class:`SchemaContract` (the built-in
types: ``reject`` for both, the rules of docs/record-types.md); ``ETL_SCHEMA_CONTRACT`` overrides
it per type (:func:`parse_overrides`, read at start-up by :meth:`Registry.apply_contracts`).

- ``unknown``: a field the schema does not declare.
  ``reject``: the record is refused, naming the field (marshmallow's "Unknown field.").
  ``keep``: the unknown fields are stored beside the record, in the table's ``extra`` jsonb
  column (:func:`etl_app.db.extra_column`), never in a typed column; a type must have that
  column to be set to ``keep``. ``drop``: they are removed; the ingestion's quality counts them.
- ``wrong_type``: an **optional** field whose value has the wrong JSON type (a string where a
  number or a boolean is expected, a number where a string is, an object or array where a scalar
  is, a scalar where a list is). ``reject``: the record is refused with the field's error.
  ``null``: the value is taken as null (the field's default, as ``null`` itself is: the field is
  left out of what the schema loads) and counted.
  A wrong-typed *required* field always refuses the record, and so does a value of the right
  type that breaks a rule (a range, an enum, a timestamp's format): those are not type errors.
  A field whose class says nothing of its JSON type (:func:`json_type` is None) is never nulled.

Kept fields are bounded: at most ``max_extra_keys`` of them, and their JSON (UTF-8) at most
``max_extra_bytes`` (``ETL_REJECTION_RAW_BYTES``, the size a rejection's values are stored up to).
Nested objects and arrays are allowed within those bytes. A string PostgreSQL's jsonb cannot
hold (NUL, a lone surrogate, in a key or a value) or a number that is not finite is refused, with
the field's name: what is kept is stored exactly as sent, never altered.

Only records the fast path refuses reach the contract: a payload it accepts has no unknown field
and no wrong-typed value (``schemas.fast``), so clean records pay nothing for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import marshmallow as ma
import orjson
from marshmallow import fields

from schemas.common import Number, StrictBool, StrictInt, StrList, _Text, safe_key

REJECT, KEEP, DROP, NULL = "reject", "keep", "drop", "null"
UNKNOWN_MODES = (REJECT, KEEP, DROP)
WRONG_TYPE_MODES = (REJECT, NULL)
EXTRA_COLUMN = "extra"
DEFAULT_MAX_EXTRA_KEYS = 100
DEFAULT_MAX_EXTRA_BYTES = 8 * 1024
SETTING = "ETL_SCHEMA_CONTRACT"


@dataclass(frozen=True)
class SchemaContract:
    """What a record type does with unknown fields (``unknown``: reject, keep, drop) and with a
    wrong-typed value in an optional field (``wrong_type``: reject, null); the bounds of a kept
    ``extra``."""

    unknown: str = REJECT
    wrong_type: str = REJECT
    max_extra_keys: int = DEFAULT_MAX_EXTRA_KEYS
    max_extra_bytes: int = DEFAULT_MAX_EXTRA_BYTES

    def __post_init__(self) -> None:
        if self.unknown not in UNKNOWN_MODES:
            raise ValueError(f"unknown must be one of {', '.join(UNKNOWN_MODES)}, not {self.unknown!r}")
        if self.wrong_type not in WRONG_TYPE_MODES:
            raise ValueError(f"wrong_type must be one of {', '.join(WRONG_TYPE_MODES)}, not {self.wrong_type!r}")

    @property
    def strict(self) -> bool:
        """Both rules ``reject``: the schema alone decides (today's behaviour)."""
        return self.unknown == REJECT and self.wrong_type == REJECT

    def describe(self) -> dict[str, str]:
        return {"unknown": self.unknown, "wrong_type": self.wrong_type}


STRICT = SchemaContract()  # both rules reject: the built-in types' contract

# -- the setting ----------------------------------------------------------------------------------


def parse_overrides(text: str) -> dict[str, dict[str, str]]:
    """``ETL_SCHEMA_CONTRACT``'s text as ``{type: {rule: mode}}``; ValueError naming the fault.

    The form is ``type:rule=mode[,rule=mode][;type:...]``, e.g.
    ``sessions:unknown=keep,wrong_type=null;tutors:unknown=drop``; spaces around parts are
    ignored, and a rule not given keeps the type's declared mode. Whether each type exists (and
    has an ``extra`` column for ``keep``) is checked against the registry
    (:meth:`Registry.apply_contracts`)."""
    out: dict[str, dict[str, str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, rules = part.partition(":")
        name = name.strip()
        if not sep or not name or not rules.strip():
            raise ValueError(f"{SETTING}: {part!r} is not type:rule=mode[,rule=mode]")
        if name in out:
            raise ValueError(f"{SETTING}: {name!r} is named twice")
        chosen: dict[str, str] = {}
        for rule in (r.strip() for r in rules.split(",")):
            key, eq, mode = (s.strip() for s in rule.partition("="))
            allowed = {"unknown": UNKNOWN_MODES, "wrong_type": WRONG_TYPE_MODES}.get(key)
            if not eq or allowed is None:
                raise ValueError(f"{SETTING}: {rule!r} in {name!r}: the rules are unknown=… and wrong_type=…")
            if mode not in allowed:
                raise ValueError(f"{SETTING}: {key} of {name!r} must be one of {', '.join(allowed)}, not {mode!r}")
            chosen[key] = mode
        out[name] = chosen
    return out


# -- JSON types of fields -------------------------------------------------------------------------

_STRING, _NUMBER, _BOOLEAN, _ARRAY, _OBJECT = "string", "number", "boolean", "array", "object"
# Most specific first: the project's strict fields, then marshmallow's own.
_FIELD_TYPES: tuple[tuple[type, str], ...] = (
    (_Text, _STRING),  # Str, Id, enums, emails, Timestamp, Day
    (StrictInt, _NUMBER),
    (Number, _NUMBER),
    (StrictBool, _BOOLEAN),
    (StrList, _ARRAY),
    (fields.Boolean, _BOOLEAN),
    (fields.Number, _NUMBER),
    (fields.String, _STRING),
    (fields.DateTime, _STRING),
    (fields.Date, _STRING),
    (fields.List, _ARRAY),
    (fields.Dict, _OBJECT),
)


def json_type(field: fields.Field) -> str | None:
    """The JSON type a field's value must have (as ``jsonb_typeof`` names it), or None when its
    class does not say (such a field is never nulled)."""
    for cls, name in _FIELD_TYPES:
        if isinstance(field, cls):
            return name
    return None


def has_json_type(value: Any, kind: str) -> bool:
    """Whether a decoded JSON ``value`` (not None) is of the JSON type ``kind``."""
    if kind == _STRING:
        return isinstance(value, str)
    if kind == _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _BOOLEAN:
        return isinstance(value, bool)
    if kind == _ARRAY:
        return isinstance(value, (list, tuple))
    return isinstance(value, dict)


# -- applying it ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """A payload after the contract: what the schema loads, what is kept, what was set aside."""

    payload: dict[str, Any]
    extra: dict[str, Any] | None  # kept unknown fields (keep), None when there are none
    dropped: tuple[str, ...] = ()
    nulled: tuple[str, ...] = ()
    errors: Mapping[str, list[str]] | None = None  # a kept extra out of bounds


def apply(contract: SchemaContract, schema: ma.Schema, payload: dict[str, Any]) -> Applied:
    """The payload with the contract's non-reject rules applied, for the schema to load.

    Unknown fields (not in ``schema.load_fields``) go to ``extra`` (keep) or away (drop); a
    wrong-typed optional value becomes None (null). With ``reject`` the payload is left as it is,
    so the schema's errors are today's."""
    known = schema.load_fields
    extra: dict[str, Any] | None = None
    dropped: tuple[str, ...] = ()
    if contract.unknown != REJECT and any(k not in known for k in payload):
        unknown = {k: v for k, v in payload.items() if k not in known}
        payload = {k: v for k, v in payload.items() if k in known}
        if contract.unknown == KEEP:
            extra = unknown
        else:
            dropped = tuple(unknown)
    nulled: list[str] = []
    if contract.wrong_type == NULL:
        for name, value in payload.items():
            field = known.get(name)
            if value is None or field is None or field.required:
                continue
            kind = json_type(field)
            if kind is not None and not has_json_type(value, kind):
                nulled.append(name)
        if nulled:  # absent, which is what null means in an optional field (and works for any field class)
            payload = {k: v for k, v in payload.items() if k not in nulled}
    errors = extra_errors(contract, extra) if extra else None
    return Applied(payload, extra or None, dropped, tuple(nulled), errors)


def extra_errors(contract: SchemaContract, extra: Mapping[str, Any]) -> dict[str, list[str]] | None:
    """Field errors of kept fields beyond the bounds or not storable in jsonb; None when fine."""
    if len(extra) > contract.max_extra_keys:
        return {
            "_schema": [f"Too many unknown fields to keep: {len(extra)}, at most {contract.max_extra_keys} are kept."]
        }
    for key, value in extra.items():
        problem = _unstorable(value, 0)
        if problem is not None:
            return {safe_key(key): [f"Unknown field cannot be kept: {problem}."]}
        if _unstorable(key, 0) is not None:
            return {safe_key(key): ["Unknown field cannot be kept: its name holds NUL or a lone surrogate."]}
    try:
        size = len(orjson.dumps(dict(extra)))
    except (TypeError, orjson.JSONEncodeError):
        return {"_schema": ["Unknown fields cannot be kept: they are not JSON."]}
    if size > contract.max_extra_bytes:
        return {
            "_schema": [f"Unknown fields too large to keep: {size} bytes as JSON, at most {contract.max_extra_bytes}."]
        }
    return None


_MAX_DEPTH = 32  # nesting kept, at most (the bytes bound the rest)


def _unstorable(value: Any, depth: int) -> str | None:
    """Why jsonb cannot hold ``value`` exactly as sent, or None."""
    if depth > _MAX_DEPTH:
        return f"nested deeper than {_MAX_DEPTH} levels"
    if isinstance(value, str):
        if "\x00" in value:
            return "it holds NUL"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "it holds a lone surrogate"
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return None if math.isfinite(value) else "a number that is not finite"
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                return "an object key that is not a string"
            problem = _unstorable(key, depth + 1) or _unstorable(inner, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for inner in value:
            problem = _unstorable(inner, depth + 1)
            if problem:
                return problem
        return None
    return f"a value of type {type(value).__name__}"
