"""The bytes of a JSON file handed to ijson in pieces that end between tokens (:class:`TokenPieces`).

ijson's C backend (yajl) keeps a token cut by the end of a read in a buffer and lexes that
buffer again from its start each time more bytes arrive, so one string of n bytes read in
64 KiB pieces costs about n² / 128 KiB steps (a 150 MB string held a worker for minutes).
Pieces that end between tokens are lexed once each. A string longer than ``max_token`` bytes
(more than its item may hold anyway) is handed on as the marker :data:`CUT` and the rest of it
is read and dropped, so neither a piece nor yajl's buffer holds more than about ``max_token``
bytes of one token.

The scan is exact for valid JSON and cheap: a quote is escaped when an odd run of backslashes
comes before it (backslashes are valid only inside strings), so a piece's quotes are counted
at C speed, the escapes taken out first when it has any backslash. Invalid JSON may fool the
scan, never past ``max_token`` bytes; ijson then refuses the file.
"""

from __future__ import annotations

import re
from typing import BinaryIO

from etl_app.uploads.formats.common import FileRefused, KiB

_READ = 64 * KiB
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_BODY = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)  # a string's body up to its closing quote
_DELIMITERS = b' \t\r\n,:[]{}"'
_BARE = bytes(b for b in range(256) if b not in _DELIMITERS)  # a number, true, false, null

# What a string cut short reads as: the item holding it is refused.
CUT = "\x00\x00string longer than the limit\x00\x00"
_CUT_TOKEN = b'"\\u0000\\u0000string longer than the limit\\u0000\\u0000"'


class TokenPieces:
    """A readable file over ``f`` (from its current position) for ``ijson.basic_parse``.

    ``read()`` returns pieces of at least 64 KiB (while the file lasts) that end outside any
    string and any bare token. A string longer than ``max_token`` bytes reads as :data:`CUT`
    (``cuts`` counts them); a bare token longer than that refuses the file (422).
    """

    def __init__(self, f: BinaryIO, max_token: int):
        self.f = f
        self.max_token = max_token
        self.cuts = 0
        self._eof = False
        self._in_string = False
        self._escaped = False  # the last byte read was a backslash that escapes the next one
        self._open = 0  # bytes of the string (or bare token) the data read so far ends in

    def _more(self) -> bytes:
        chunk = b"" if self._eof else self.f.read(_READ)
        if not chunk:
            self._eof = True
        return chunk

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson asks for nothing first, to learn whether the file gives bytes
            return b""
        piece = bytearray()
        while True:
            more = self._more()
            if not more:
                return bytes(piece)  # the end of the file: ijson judges what is left
            self._advance(more)
            piece += more
            if self._in_string and self._open > self.max_token:
                piece = self._cut(piece)
            elif not self._in_string and self._open > self.max_token:
                raise FileRefused(
                    422, "unreadable_file", f"The file holds a value of more than {self.max_token} characters: fix it."
                )
            if not self._open and not self._in_string and len(piece) >= _READ:
                return bytes(piece)

    def _advance(self, data: bytes) -> None:
        """The state after ``data``, from the state before it."""
        if self._escaped:
            data = data[1:]
            self._escaped = False
        if b"\\" in data:
            data = _ESCAPE.sub(b"", data)
            if data.endswith(b"\\"):  # a backslash whose escaped byte comes in the next read
                data = data[:-1]
                self._escaped = True
        quotes = data.count(b'"')
        if quotes % 2:
            self._in_string = not self._in_string
        if quotes:
            after = data[data.rfind(b'"') + 1 :]
            self._open = len(after) if self._in_string else len(after) - len(after.rstrip(_BARE))
        elif self._in_string:
            self._open += len(data)
        else:
            run = len(data) - len(data.rstrip(_BARE))
            self._open = self._open + run if run == len(data) else run

    def _cut(self, piece: bytearray) -> bytearray:
        """``piece`` with its open string (at its end) as the marker, the rest of the string read
        and dropped, and what follows it in the last read appended."""
        self.cuts += 1
        start = _last_unescaped_quote(piece)
        piece[start:] = _CUT_TOKEN
        while True:
            tail = self._more()
            if not tail:
                self._in_string, self._escaped, self._open = False, False, 0
                return piece  # the file ends inside the string: ijson says so after the marker
            if self._escaped:
                tail = tail[1:]
            end = _BODY.match(tail).end() if b"\\" in tail else _found(tail.find(b'"'), len(tail))
            if end < len(tail) and tail[end] == 0x22:  # the closing quote
                rest = tail[end + 1 :]
                self._in_string, self._escaped, self._open = False, False, 0
                self._advance(rest)
                piece += rest
                return piece
            self._escaped = end < len(tail)  # only a lone backslash at the end stops the body short


def _last_unescaped_quote(data: bytearray) -> int:
    at = data.rfind(b'"')
    while at > 0:
        before = at
        while before > 0 and data[before - 1] == 0x5C:  # a backslash
            before -= 1
        if (at - before) % 2 == 0:
            return at
        at = data.rfind(b'"', 0, at)
    return max(at, 0)


def _found(at: int, otherwise: int) -> int:
    return otherwise if at < 0 else at
