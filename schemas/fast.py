"""The fast path of a record schema: the same verdict and values as marshmallow, several times faster.

:func:`fast_loader` reads a schema built from the fields of :mod:`schemas.common` and returns a
function ``load(payload) -> dict | None``: the loaded values when the payload is valid, exactly as
``schema.load(payload)`` gives them (same keys, types and values), or None when the fast path
refuses the payload or is not sure. A refused payload goes through marshmallow
(:meth:`etl_app.record_types.RecordType.validate`), which stays the reference: it gives every
error message and the OpenAPI document. The fast path never makes an error message, so it can
only be wrong by accepting what marshmallow refuses or by loading other values; a property test
(``tests/schemas/test_fast_path.py``) compares both on generated and mutated payloads.

How it works: one ``msgspec`` struct per schema checks the shape (every field known, required
fields present, each value of its JSON type); then one small converter per field, built from
the field's class, its limits and its validators, applies the rules of :mod:`schemas.common`;
then the schema's own ``validates_schema`` and ``post_load`` hooks run on the result (the same
methods marshmallow calls). msgspec was chosen over pydantic v2 for the shape check by
measurement (``python -m bench.validators``, docs/benchmark.md).

Where msgspec's own coercion differs from the schemas' rules, the rule is written out here, and
anything in doubt is refused (so marshmallow decides):

- Unknown fields: refused (``forbid_unknown_fields``); marshmallow names them in its error.
- Missing required field, or ``null`` in one: refused. ``null`` in an optional field is the
  field's default (``load_default``: None, or False for the flags that default to false).
- Strings (``Str``, enums, emails, list items): the exact rules of ``_Text._clean``: at most
  ``max_raw`` characters as sent, no NUL, no lone surrogate (checked by encoding non-ASCII
  text), then ``str.strip`` (Unicode whitespace, so a control character other than whitespace
  is kept, as marshmallow keeps it); empty after stripping is the default in an optional field
  and refused in a required one; then the maximum length, counted after stripping.
- Ids: stripped, then ``[A-Za-z0-9_.:-]{1,64}`` with ``fullmatch`` (an id ending in ``"\\n"`` is
  refused before stripping could matter: only the stripped value is matched, as marshmallow does).
- Integers: JSON integers only. msgspec refuses bools and floats for ``int``, so ``5.0`` (which
  marshmallow loads as 5) is refused here and loaded by marshmallow; integers of any size pass
  msgspec and are then held to PostgreSQL's ``integer`` range and the field's ``Range``.
- Numbers: msgspec turns ``Decimal`` and big integers into floats, so numbers are taken as they
  are (``Any``) and only an exact ``int`` or ``float`` is accepted, then ``float()`` (an integer
  too large for a float is refused), then NaN and infinities are refused, then the ``Range``.
- Booleans: only ``True``/``False`` (msgspec refuses 0 and 1 for ``bool``).
- Timestamps: the schemas' own regular expression and year bounds, then
  ``datetime.fromisoformat`` as marshmallow calls it (``t``/``z`` upper-cased; a fraction beyond
  microseconds is truncated by the same call), naive as UTC. A date alone does not match.
  A value that does not match is absent if it is an optional, blank one of at most ``max_blank``
  characters, else refused.
- Days: ``YYYY-MM-DD`` by the same expression and year bounds, ``date.fromisoformat``.
- Lists of strings: a list (or tuple) of strings whose count is within the field's bounds,
  each item a required string; output a new list.

A schema with a field class, a validator or a hook this module does not know gets no fast path
(:func:`fast_loader` raises :class:`Unsupported`): a record type without one is validated by
marshmallow alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import marshmallow as ma
import msgspec
from marshmallow import fields, validate

from schemas.common import (
    _DAY_RE,
    _ID_RE,
    _TIMESTAMP_RE,
    INT32_MAX,
    INT32_MIN,
    MAX_YEAR,
    MIN_YEAR,
    Day,
    Id,
    Number,
    Str,
    StrictBool,
    StrictInt,
    StrList,
    Timestamp,
    _Text,
)

Converter = Callable[[Any], Any]
FastLoad = Callable[[Any], "dict[str, Any] | None"]

# The one pre_load hook of RecordSchema: it only renames unknown keys, which the fast path refuses.
_KNOWN_PRE_LOAD = {"_safe_unknown_keys"}


class Unsupported(TypeError):
    """The schema uses something the fast path does not reproduce: it has no fast path."""


class _Refused(Exception):
    """The fast path does not accept this value: marshmallow decides."""


_REQUIRED = object()  # the default of a required field: absent or null is refused


def _refuse() -> Any:
    raise _Refused  # a new instance each time: a shared one would pile up tracebacks


# -- validators ---------------------------------------------------------------------------------


def _checks(field: fields.Field) -> list[Callable[[Any], bool]]:
    """The field's validators as predicates (True: the value passes)."""
    out: list[Callable[[Any], bool]] = []
    for validator in field.validators:
        if type(validator) is validate.Range:
            out.append(_range(validator))
        elif type(validator) is validate.OneOf:
            choices = frozenset(validator.choices)
            out.append(choices.__contains__)
        else:
            out.append(_call(validator))
    return out


def _range(r: validate.Range) -> Callable[[Any], bool]:
    lo, hi = r.min, r.max

    def check(value: Any) -> bool:
        if lo is not None and (value < lo if r.min_inclusive else value <= lo):
            return False
        return not (hi is not None and (value > hi if r.max_inclusive else value >= hi))

    return check


def _call(validator: Callable[[Any], Any]) -> Callable[[Any], bool]:
    """A validator called as marshmallow calls it: an error, or a plain function's False, fails."""
    plain = not isinstance(validator, validate.Validator)

    def check(value: Any) -> bool:
        try:
            result = validator(value)
        except ma.ValidationError:
            return False
        return not (plain and result is False)

    return check


def _validated(convert: Converter, checks: list[Callable[[Any], bool]]) -> Converter:
    if not checks:
        return convert

    def run(value: Any) -> Any:
        value = convert(value)
        if value is not None:  # None: an empty optional value, which marshmallow does not validate
            for check in checks:
                if not check(value):
                    _refuse()
        return value

    return run


# -- converters, one per field class of schemas.common ------------------------------------------------


def _text(field: _Text, required: bool, max_length: int | None) -> Converter:
    max_raw = field.max_raw

    def convert(value: str) -> str | None:
        if len(value) > max_raw or "\x00" in value:
            _refuse()
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                _refuse()
        value = value.strip()
        if not value:
            return _refuse() if required else None
        if max_length is not None and len(value) > max_length:
            _refuse()
        return value

    return convert


def _id(field: Id, required: bool) -> Converter:
    max_raw = field.max_raw
    fullmatch = _ID_RE.fullmatch

    def convert(value: str) -> str | None:
        if len(value) > max_raw:
            _refuse()
        stripped = value.strip()
        if fullmatch(stripped) is None:
            # only whitespace and id characters pass, so NUL and surrogates never do
            return None if not stripped and not required else _refuse()
        return stripped

    return convert


def _int(lo: int, hi: int) -> Converter:
    """An integer within PostgreSQL's ``integer`` and ``lo..hi``."""
    lo, hi = max(lo, INT32_MIN), min(hi, INT32_MAX)

    def convert(value: Any) -> int:
        if type(value) is not int or not lo <= value <= hi:
            _refuse()
        return value

    return convert


def _inclusive_range(field: fields.Field) -> tuple[Any, Any] | None:
    """``(min, max)`` when the field's one validator is an inclusive ``Range`` (None: no bound)."""
    if len(field.validators) != 1:
        return None
    r = field.validators[0]
    if type(r) is not validate.Range or not (r.min_inclusive and r.max_inclusive):
        return None
    return r.min, r.max


def _number(value: Any) -> float:
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            _refuse()
        return value
    if kind is not int:  # bool, Decimal, str...: marshmallow decides
        _refuse()
    try:
        out = float(value)
    except OverflowError:
        return _refuse()
    if not math.isfinite(out):
        _refuse()
    return out


def _blank(required: bool, max_blank: int) -> Converter:
    def convert(value: str) -> None:
        if required or value.strip() or len(value) > max_blank:
            _refuse()

    return convert


def _aware(value: str) -> datetime:
    result = datetime.fromisoformat(value.replace("t", "T").replace("z", "Z"))
    return result if result.tzinfo is not None else result.replace(tzinfo=UTC)


def _temporal(field: Timestamp | Day, required: bool, pattern: re.Pattern[str], parse: Converter) -> Converter:
    """A timestamp (``_aware``) or a day (``date.fromisoformat``): matched as sent, year bounded."""
    fullmatch, blank = pattern.fullmatch, _blank(required, field.max_blank)

    def convert(value: str) -> datetime | date | None:
        if fullmatch(value) is None:
            return blank(value)
        if not MIN_YEAR <= int(value[:4]) <= MAX_YEAR:
            _refuse()
        try:
            return parse(value)
        except ValueError:
            return _refuse()

    return convert


def _str_list(field: StrList) -> Converter:
    inner = field.inner
    if type(inner) is not Str or not inner.required:
        raise Unsupported(f"list items of {type(inner).__name__}")
    item = _validated(_text(inner, True, inner.max_length), _checks(inner))
    lo, hi = field.min_items, field.max_items

    def convert(value: list[str]) -> list[str]:
        if not lo <= len(value) <= hi:
            _refuse()
        return [item(one) for one in value]

    return convert


def _identity(value: Any) -> Any:
    return value


def _field(field: fields.Field) -> tuple[Any, Converter]:
    """The msgspec type of a field's value as sent, and its converter (not None values only)."""
    if field.data_key is not None or field.attribute is not None:
        raise Unsupported("data_key or attribute")
    required, kind = field.required, type(field)
    bounds = _inclusive_range(field) if kind is StrictInt else None
    if bounds is not None:  # the common case in one step: type, integer range and the field's range
        lo, hi = bounds
        return int, _int(INT32_MIN if lo is None else lo, INT32_MAX if hi is None else hi)
    if kind is Id:
        spec: tuple[Any, Converter] = (str, _id(field, required))
    elif kind is Str:
        spec = (str, _text(field, required, field.max_length))
    elif kind is StrictInt:
        spec = (int, _int(INT32_MIN, INT32_MAX))
    elif kind is Number:
        spec = (Any, _number)
    elif kind is StrictBool:
        spec = (bool, _identity)
    elif kind is Timestamp:
        spec = (str, _temporal(field, required, _TIMESTAMP_RE, _aware))
    elif kind is Day:
        spec = (str, _temporal(field, required, _DAY_RE, date.fromisoformat))
    elif kind is StrList:
        spec = (list[str], _str_list(field))
    else:
        raise Unsupported(f"field class {kind.__name__}")
    return spec[0], _validated(spec[1], _checks(field))


# -- the schema ---------------------------------------------------------------------------------


def _hooks(schema: ma.Schema) -> list[Callable[[dict[str, Any]], Any]]:
    """The schema's validates_schema then post_load methods, as marshmallow runs them on one valid
    record; any other hook makes the schema unsupported."""
    hooks = schema._hooks
    for tag, registered in hooks.items():
        if tag not in ("pre_load", "validates_schema", "post_load") and registered:
            raise Unsupported(f"{tag} hooks")
    if any(name not in _KNOWN_PRE_LOAD for name, *_ in hooks.get("pre_load", ())):
        raise Unsupported("pre_load hooks")
    out = []
    for tag in ("validates_schema", "post_load"):
        for name, many, options in hooks.get(tag, ()):
            if many or options.get("pass_original"):
                raise Unsupported(f"{tag} {name} with pass_collection or pass_original")
            out.append((tag, getattr(schema, name)))
    validators = [method for tag, method in out if tag == "validates_schema"]
    processors = [method for tag, method in out if tag == "post_load"]

    def validate_all(data: dict[str, Any]) -> dict[str, Any]:
        for method in validators:
            method(data, partial=None, many=False, unknown=ma.RAISE)
        for method in processors:
            data = method(data, partial=None, many=False, unknown=ma.RAISE)
        return data

    return [validate_all] if out else []


def fast_loader(schema_class: type[ma.Schema]) -> FastLoad:
    """The fast path of a schema (see the module docstring); :class:`Unsupported` if it has none."""
    schema = schema_class()
    if schema.opts.unknown != ma.RAISE:
        raise Unsupported("unknown fields other than RAISE")
    names, specs, converters, defaults = [], [], [], []
    for name, field in schema.load_fields.items():
        value_type, convert = _field(field)
        default = field.load_default
        if callable(default):
            raise Unsupported("a callable load_default")
        names.append(name)
        converters.append(convert)
        defaults.append(_REQUIRED if field.required else None if default is ma.missing else default)
        if field.required:
            specs.append((name, value_type))
        else:
            specs.append((name, value_type | None if value_type is not Any else Any, None))
    struct = msgspec.defstruct(f"Fast{schema_class.__name__}", specs, kw_only=True, forbid_unknown_fields=True)
    fields_ = tuple(zip(names, converters, defaults, strict=True))
    hooks = _hooks(schema)
    astuple, convert_struct = msgspec.structs.astuple, msgspec.convert

    def load(payload: Any) -> dict[str, Any] | None:
        try:
            values = astuple(convert_struct(payload, struct))
            data = {}
            for (name, convert, default), value in zip(fields_, values, strict=True):
                if value is None:  # absent or null
                    if default is _REQUIRED:
                        raise _Refused
                    data[name] = default
                else:
                    data[name] = convert(value)
            for hook in hooks:
                data = hook(data)
            return data
        except (_Refused, msgspec.ValidationError, ma.ValidationError):
            return None
        except Exception:  # noqa: BLE001 - anything unforeseen: marshmallow decides
            return None

    return load
