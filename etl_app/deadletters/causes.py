"""The cause of an error message (:func:`normalise`): what groups dead letters
(:mod:`etl_app.deadletters.groups`), written with each one (:mod:`etl_app.deadletters.store`)."""

from __future__ import annotations

import re

MAX_CAUSE_CHARS = 1000

_QUOTED = re.compile(r"""(?<![\w'"])'(?:[^'\\\n]|\\.)*'(?!\w)|"(?:[^"\\\n]|\\.)*\"""")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b")
_MOMENT = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?![\w:])")
_HEX_ID = re.compile(r"\b(?:0x[0-9a-fA-F]+|(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,})\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_REPEATED = re.compile(r"""(<n>|<id>|<ts>|'<v>'|"<v>")(?:\s*,\s*\1)+""")
_SPACE = re.compile(r"\s+")


def _quoted(match: re.Match[str]) -> str:
    return "'<v>'" if match.group(0).startswith("'") else '"<v>"'


def normalise(message: str | None) -> str:
    """The cause of an error message: quoted values become ``'<v>'`` or ``"<v>"``, UUIDs and hex
    ids ``<id>``, ISO dates and moments ``<ts>``, other numbers ``<n>`` (every run of digits, so
    "T-17" and "S17" become "T-<n>" and "S<n>"); a list of one placeholder is written once
    (``<n>, ...``); white space is collapsed, and the result cut at 1,000 characters."""
    text = _QUOTED.sub(_quoted, message or "")
    text = _UUID.sub("<id>", text)
    text = _MOMENT.sub("<ts>", text)
    text = _HEX_ID.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    text = _REPEATED.sub(r"\1, ...", text)
    return _SPACE.sub(" ", text).strip()[:MAX_CAUSE_CHARS]
