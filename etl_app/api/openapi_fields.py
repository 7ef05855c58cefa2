"""How the strict fields of ``schemas.common`` appear in the OpenAPI document.

apispec knows marshmallow's own fields only; ours derive from ``fields.Field`` and would come out
untyped (and their ``Range`` validators as ``x-minimum``). Each is mapped to its JSON type, and an
attribute function adds what the field itself checks: lengths (``maxLength`` as sent, spaces
included; the length once stripped in the pattern), the id pattern, email and date/date-time
formats (their 1900..2100 years in the description), the PostgreSQL ``integer`` bounds, item
counts, and ``nullable`` for every optional field (null means absent).
"""

from __future__ import annotations

from typing import Any

from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields, validate

from schemas.common import (
    EMAIL_MAX_LENGTH,
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
)

# A required string must keep a character that is not whitespace once stripped; an optional one
# may be empty or all space (it means null); no string may hold NUL. "Whitespace" is what
# Python's str.strip() removes, spelled out: a pattern's \s means less in JSON Schema (ECMA 262:
# no U+001C..U+001F, no U+0085), so a client would send "\u0085" as a name the server strips away.
SPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def text_pattern(max_length: int, required: bool) -> str:
    """A string of at most ``max_length`` characters once stripped, none of them NUL, between any
    spaces; empty (or all space) only when optional."""
    value = rf"[^\x00{SPACE}](?:[^\x00]{{0,{max_length - 2}}}[^\x00{SPACE}])?"
    return rf"^[{SPACE}]*{value if required else f'(?:{value})?'}[{SPACE}]*$"


ID_PATTERN = rf"^[{SPACE}]*[A-Za-z0-9_.:-]{{1,64}}[{SPACE}]*$"
OPTIONAL_ID_PATTERN = rf"^[{SPACE}]*([A-Za-z0-9_.:-]{{1,64}}[{SPACE}]*)?$"

TYPES: dict[type, tuple[str, str | None]] = {
    Str: ("string", None),
    Id: ("string", None),
    Timestamp: ("string", "date-time"),
    Day: ("string", "date"),
    StrictInt: ("integer", "int32"),
    Number: ("number", None),
    StrictBool: ("boolean", None),
}


BLANK_PATTERN = rf"^[{SPACE}]*$"


def _or_blank(field: fields.Field, ret: dict[str, Any], format: str, max_length: int) -> dict[str, Any]:
    """An optional timestamp or day may also be empty (or all space): it is then absent, as any
    empty string in an optional field is. The format moves from ``ret`` (the property apispec is
    building) into the first of two alternatives."""
    if field.required:
        return {}
    ret.pop("format", None)
    return {
        "anyOf": [
            {"type": "string", "format": format, "maxLength": max_length},
            {"type": "string", "pattern": BLANK_PATTERN, "maxLength": max_length},
        ]
    }


def _strict_properties(self: Any, field: fields.Field, ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not field.required and isinstance(field, (*TYPES, StrList)):  # null means absent
        out["nullable"] = True
    if isinstance(field, Id):
        out.update(maxLength=field.max_raw, pattern=ID_PATTERN if field.required else OPTIONAL_ID_PATTERN)
    elif isinstance(field, Timestamp):
        out.update(maxLength=64, description=f"ISO 8601; year {MIN_YEAR}..{MAX_YEAR}; naive means UTC")
        out.update(_or_blank(field, ret, "date-time", 64))
    elif isinstance(field, Day):
        out.update(maxLength=10, description=f"YYYY-MM-DD; year {MIN_YEAR}..{MAX_YEAR}")
        out.update(_or_blank(field, ret, "date", 10))
    elif isinstance(field, Str):
        out.update(maxLength=field.max_raw)
        if any(isinstance(v, validate.Email) for v in field.validators):
            out.update(format="email", maxLength=EMAIL_MAX_LENGTH)
        elif "enum" not in ret:
            out["pattern"] = text_pattern(field.max_length, field.required)
    elif isinstance(field, StrictInt):
        out["minimum"] = max(ret.get("minimum", INT32_MIN), INT32_MIN)
        out["maximum"] = min(ret.get("maximum", INT32_MAX), INT32_MAX)
    elif isinstance(field, StrList):
        out.update(minItems=field.min_items, maxItems=field.max_items)
    return out


def plugin() -> MarshmallowPlugin:
    """A MarshmallowPlugin to hand to APISpec; call :func:`register` once the spec is built."""
    return MarshmallowPlugin()


def register(ma_plugin: MarshmallowPlugin) -> None:
    """Teach ``ma_plugin``'s converter our fields (after ``APISpec(plugins=[ma_plugin])``)."""
    for field_class, (type_, fmt) in TYPES.items():
        ma_plugin.map_to_openapi_type(field_class, type_, fmt)
    ma_plugin.converter.add_attribute_function(_strict_properties)
