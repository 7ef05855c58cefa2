"""A stored upload read back as a seekable binary file, one piece (one query) at a time.

csv and NDJSON read it front to back; xlsx (a zip) and parquet seek to their directories and
footers first. Either way the worker holds at most a couple of pieces (1 MiB each) of the file,
never the whole of it.
"""

from __future__ import annotations

import io
import uuid

import sqlalchemy as sa

# Read in binary: the piece comes as it is, not as hex text (twice its size) made by PostgreSQL
# and decoded here (1 MiB: ~3 ms less of the worker's CPU, ~5 less of PostgreSQL's).
_PIECE = "SELECT data FROM upload_chunks WHERE upload_id = %s AND seq = %s"


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
            cursor = self._conn.connection.driver_connection.cursor(binary=True)
            try:
                row = cursor.execute(_PIECE, (self._id, seq)).fetchone()
            finally:
                cursor.close()
            if row is None or row[0] is None:
                raise OSError(f"upload {self._id}: piece {seq} is missing")
            data = bytes(row[0])
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
