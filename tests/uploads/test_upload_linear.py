"""Upload readers whose work grows with the file, not with its square: a long JSON string is
lexed once, an xlsx slice resumed deep in a sheet reads about one slice of its rows, and the
shared strings of an xlsx are checked without being held. Structure is asserted, not time."""

from __future__ import annotations

import io
import json
import re

import pytest

from etl_app.uploads.formats import Limits, MiB, Row, read_rows

pytestmark = pytest.mark.unit

LIMITS = Limits()
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def rows_of(data: bytes, fmt: str, limits: Limits = LIMITS, checkpoint: dict | None = None) -> list[tuple[Row, dict]]:
    return list(read_rows(io.BytesIO(data), fmt, checkpoint=checkpoint, limits=limits, size=len(data)))


# ----------------------------------------------------------------------------- json


def test_json_long_strings_reach_the_parser_whole_and_an_oversized_one_is_dropped(monkeypatch):
    """yajl lexes a token cut by the end of a read again from its start at every read (quadratic
    in its length): the pieces handed to it end between tokens, and a string longer than an item
    may hold is never handed on at all."""
    import ijson

    pieces: list[bytes] = []
    real = ijson.basic_parse

    class Recorded:
        def __init__(self, source):
            self.source = source

        def read(self, size: int = -1) -> bytes:
            data = self.source.read(size)
            pieces.append(data)
            return data

    monkeypatch.setattr(ijson, "basic_parse", lambda source, **kw: real(Recorded(source), **kw))
    long = "x" * (3 * MiB) + '\\"é'
    limits = Limits(max_field_bytes=512 * 1024)  # 4 MiB an item
    data = json.dumps([{"a": 1, "note": long}, {"a": 2, "note": "y" * (6 * MiB)}, {"a": 3}]).encode()
    rows = rows_of(data, "json", limits)
    assert [(r.number, r.errors) for r, _ in rows] == [
        (1, None),
        (2, {"_row": ["not usable: larger than the limit for one item"]}),
        (3, None),
    ]
    assert rows[0][0].values == {"a": 1, "note": long}
    handed = b"".join(pieces)
    assert len(handed) < len(data) - 5 * MiB  # the 6 MiB string was dropped, never handed on
    assert max(len(p) for p in pieces) < 5 * MiB
    ends, at = [], 0
    for piece in pieces:
        at += len(piece)
        ends.append(at)
    strings = [m.span() for m in _STRING.finditer(handed)]
    assert sum(1 for start, end in strings for cut in ends if start < cut < end) == 0
