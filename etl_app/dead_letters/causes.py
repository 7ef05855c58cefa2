"""The cause of an error message (:func:`normalise`): what groups dead letters
(:mod:`etl_app.dead_letters.groups`), written with each one (:mod:`etl_app.dead_letters.store`)."""

from __future__ import annotations

import re
from functools import lru_cache

MAX_CAUSE_CHARS = 1000
KEY = "<key>"
# A key in a "<record type>:<key>" reference: up to white space, a quote or a bracket, and not
# ending in sentence punctuation ("parent tutors:alice." is the key "alice").
_KEY_CHARS = r"""[^\s'"()\[\]{}<>,;]*[^\s'"()\[\]{}<>,;.:!?]"""

_QUOTED = re.compile(r"""(?<![\w'"])'(?:[^'\\\n]|\\.)*'(?!\w)|"(?:[^"\\\n]|\\.)*\"""")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b")
_MOMENT = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?![\w:])")
_HEX_ID = re.compile(r"\b(?:0x[0-9a-fA-F]+|(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,})\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_REPEATED = re.compile(r"""(<n>|<id>|<ts>|'<v>'|"<v>")(?:\s*,\s*\1)+""")
_SPACE = re.compile(r"\s+")


@lru_cache(maxsize=8)
def _reference(type_names: tuple[str, ...]) -> re.Pattern[str]:
    """``<type>:<key>`` for these record types anywhere, and ``parent <word>:<key>`` for any word."""
    types = "|".join(re.escape(name) for name in sorted(type_names, key=len, reverse=True))
    named = rf"(?<![\w.:/-])(?:{types}):" if types else r"(?!)"
    return re.compile(rf"(?:{named}|(?<=\bparent )[A-Za-z_][\w-]*:){_KEY_CHARS}")


def _record_types() -> tuple[str, ...]:
    from etl_app.record_types import get_registry  # the registry imports far more than this module

    return tuple(get_registry().names())


def _keyed(match: re.Match[str]) -> str:
    text = match.group(0)
    return text[: text.index(":") + 1] + KEY


def _quoted(match: re.Match[str]) -> str:
    return "'<v>'" if match.group(0).startswith("'") else '"<v>"'


def normalise(message: str | None, record_types: tuple[str, ...] | None = None) -> str:
    """The cause of an error message: the key of a ``<record type>:<key>`` reference (a type of
    ``record_types``, the registry's by default, or any ``word:`` after "parent ") becomes
    ``<key>``, so "parent tutors:alice not found" and "parent tutors:bob not found" are one cause;
    quoted values become ``'<v>'`` or ``"<v>"``, UUIDs and hex
    ids ``<id>``, ISO dates and moments ``<ts>``, other numbers ``<n>`` (every run of digits, so
    "T-17" and "S17" become "T-<n>" and "S<n>"); a list of one placeholder is written once
    (``<n>, ...``); white space is collapsed, and the result cut at 1,000 characters."""
    names = _record_types() if record_types is None else tuple(record_types)
    text = _reference(names).sub(_keyed, message or "")
    text = _QUOTED.sub(_quoted, text)
    text = _UUID.sub("<id>", text)
    text = _MOMENT.sub("<ts>", text)
    text = _HEX_ID.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    text = _REPEATED.sub(r"\1, ...", text)
    return _SPACE.sub(" ", text).strip()[:MAX_CAUSE_CHARS]
