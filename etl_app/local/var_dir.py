"""The launcher's ``var`` directory: creating directories in it, and the lock a launcher holds on it."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import IO

from etl_app.local.errors import EmbeddedServiceError

LOCK_NAME = "embedded.lock"


def make_dirs(path: Path) -> None:
    """mkdir -p, with created directories searchable by others (umask 077 would lock out the
    PostgreSQL account when running as root)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
            d.chmod(0o755)


class VarDirLock:
    """An exclusive ``flock`` on ``var_dir/embedded.lock``, which holds the holder's pid.

    The lock dies with the process, so after a launcher was killed the next one finds it free.
    """

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.path = var_dir / LOCK_NAME
        self._lock_file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._lock_file is not None

    def acquire(self, *writable: Path) -> None:
        """Create ``var_dir`` and take the lock; :class:`EmbeddedServiceError` if another launcher
        holds it, or if ``var_dir``, the lock file or one of ``writable`` exists but is not writable."""
        make_dirs(self.var_dir)
        for path in (self.var_dir, self.path, *writable):
            if path.exists() and not os.access(path, os.W_OK):
                raise EmbeddedServiceError(
                    f"{path} belongs to uid {path.stat().st_uid} (made by a run as another user, root?) "
                    "and this user cannot write it; remove it or run as that user"
                )
        import fcntl

        fh = open(self.path, "a+", encoding="utf-8")  # held (locked) until release()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise EmbeddedServiceError(
                f"{self.var_dir} is in use by another running launcher (etl-app run, pid {holder}) and its "
                f"embedded servers; stop that one first (Ctrl-C in its terminal, or kill {holder}), or give "
                "this one another directory with ETL_VAR_DIR"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock_file = fh

    def release(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self._lock_file.seek(0)
                self._lock_file.truncate()
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None
