"""The physical lines of a binary file from a byte offset, each held to a maximum length (csv/tsv and ndjson)."""

from __future__ import annotations

from typing import BinaryIO

from etl_app.uploads.formats.common import _CHUNK


class _Lines:
    """Physical lines (``\\n``-terminated) of a binary file from a byte offset.

    ``pos`` is the offset just after the last line returned. A line longer than ``max_line``
    is returned cut (its first ``max_line`` bytes) with ``overlong`` set; the rest of it is
    read and dropped, never held.
    """

    def __init__(self, f: BinaryIO, start: int, max_line: int):
        f.seek(start)
        self.f = f
        self.pos = start
        self.max_line = max_line
        self.buf = b""
        self.i = 0
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(_CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[self.i :] + chunk
        self.i = 0
        return True

    def next(self) -> tuple[bytes, bool] | None:
        """``(line, overlong)``, or None at the end of the file."""
        while True:
            j = self.buf.find(b"\n", self.i)
            if j >= 0 and j + 1 - self.i <= self.max_line:
                line = self.buf[self.i : j + 1]
                self.i = j + 1
                self.pos += len(line)
                return line, False
            if len(self.buf) - self.i > self.max_line:
                return self._skip_overlong()
            if not self._fill():
                if self.i >= len(self.buf):
                    return None
                line = self.buf[self.i :]
                self.i = len(self.buf)
                self.pos += len(line)
                return line, False

    def _skip_overlong(self) -> tuple[bytes, bool]:
        kept = self.buf[self.i : self.i + self.max_line]
        while True:
            j = self.buf.find(b"\n", self.i)
            if j >= 0:
                self.pos += j + 1 - self.i
                self.i = j + 1
                return kept, True
            self.pos += len(self.buf) - self.i
            self.i = len(self.buf)
            if not self._fill():
                return kept, True
