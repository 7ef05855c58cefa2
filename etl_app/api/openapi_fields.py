"""How the strict fields of ``schemas.common`` appear in the OpenAPI document.

apispec knows marshmallow's own fields only; ours derive from ``fields.Field`` and would come out
untyped (and their ``Range`` validators as ``x-minimum``). Each is mapped to its JSON type, and an
attribute function adds what the field itself checks: lengths, the id pattern, email and
date/date-time formats, the 1900..2100 years, the PostgreSQL ``integer`` bounds, item counts.
"""

from __future__ import annotations

from typing import Any

from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields, validate

from schemas.common import (
    EMAIL_MAX_LENGTH,
    INT32_MAX,
    INT32_MIN,
    Day,
    Id,
    Number,
    Str,
    StrictBool,
    StrictInt,
    StrList,
    Timestamp,
)

# A stripped string must keep a character that is not whitespace, and no string may hold NUL.
TEXT_PATTERN = r"^[^\x00]*[^\x00\s][^\x00]*$"
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
YEARS = r"(19[0-9]{2}|20[0-9]{2}|2100)"
DAY_PATTERN = rf"^{YEARS}-[0-9]{{2}}-[0-9]{{2}}$"
TIMESTAMP_PATTERN = rf"^{YEARS}-[0-9]{{2}}-[0-9]{{2}}[Tt ][0-9]{{2}}:[0-9]{{2}}"

TYPES: dict[type, tuple[str, str | None]] = {
    Str: ("string", None),
    Id: ("string", None),
    Timestamp: ("string", "date-time"),
    Day: ("string", "date"),
    StrictInt: ("integer", "int32"),
    Number: ("number", None),
    StrictBool: ("boolean", None),
}


def _strict_properties(self: Any, field: fields.Field, ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(field, Id):
        out.update(minLength=1, maxLength=64, pattern=ID_PATTERN)
    elif isinstance(field, Timestamp):
        out.update(pattern=TIMESTAMP_PATTERN, maxLength=64)
    elif isinstance(field, Day):
        out.update(pattern=DAY_PATTERN, maxLength=10)
    elif isinstance(field, Str):
        out.update(minLength=1, maxLength=field.max_length)
        if any(isinstance(v, validate.Email) for v in field.validators):
            out.update(format="email", maxLength=EMAIL_MAX_LENGTH)
        elif "enum" not in ret:
            out["pattern"] = TEXT_PATTERN
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
