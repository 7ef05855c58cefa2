"""A stored upload read back as a seekable binary file, one piece (one query) at a time.

csv and NDJSON read it front to back; xlsx (a zip) and parquet seek to their directories and
footers first. Either way the worker holds at most a couple of pieces (1 MiB each) of the file,
never the whole of it.
"""

from __future__ import annotations

import io
import uuid

import sqlalchemy as sa

_PIECE = sa.text("SELECT data FROM upload_chunks WHERE upload_id = :id AND seq = :seq")


class UploadFile(io.RawIOBase):
    """The bytes of one upload (``size`` long, in pieces of ``piece_bytes``), read through
    ``conn`` (a connection of its own: reads happen between the parser's commits)."""

    def __init__(self, conn: sa.Connection, upload_id: uuid.UUID, size: int, piece_bytes: int) -> None:
        self._conn, self._id, self._size, self._piece = conn, upload_id, size, piece_bytes
        self._pos = 0
        self._cached: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def _piece_at(self, seq: int) -> bytes:
        data = self._cached.get(seq)
        if data is None:
            data = self._conn.execute(_PIECE, {"id": self._id, "seq": seq}).scalar()
            if data is None:
                raise OSError(f"upload {self._id}: piece {seq} is missing")
            data = bytes(data)
            if len(self._cached) >= 2:  # the piece before is often read again (a zip header, a line)
                self._cached.pop(next(iter(self._cached)))
            self._cached[seq] = data
        return data

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._pos >= self._size:
            return 0
        seq, start = divmod(self._pos, self._piece)
        data = self._piece_at(seq)
        n = min(len(buffer), len(data) - start)
        buffer[:n] = data[start : start + n]
        self._pos += n
        return n


def open_upload(conn: sa.Connection, upload_id: uuid.UUID, size: int, piece_bytes: int) -> io.BufferedReader:
    """The upload as a buffered, seekable binary file."""
    return io.BufferedReader(UploadFile(conn, upload_id, size, piece_bytes), buffer_size=256 * 1024)
