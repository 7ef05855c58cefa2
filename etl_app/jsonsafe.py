"""Make arbitrary decoded JSON safe to store in jsonb and to echo back in responses."""

from __future__ import annotations

from typing import Any


def clean_text(value: str) -> str:
    """Replace what PostgreSQL text/jsonb cannot hold: NUL and lone surrogates."""
    if "\x00" in value:
        value = value.replace("\x00", "\\u0000")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def json_safe(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` with every string cleaned (keys included); deep nesting is cut."""
    if depth > 50:
        return "…"
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    return value
