"""The app's own processes (gunicorn, celery worker, beat) as real subprocesses for tests."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from etl_app.local import processes
from etl_app.local.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """:func:`etl_app.local.processes.wait_until`, failing the test (AssertionError) on timeout."""
    try:
        return processes.wait_until(check, timeout, interval, what)
    except processes.WaitTimeout as exc:
        raise AssertionError(str(exc)) from None


def wait_answering(proc: Proc, url: str, timeout: float = 60) -> None:
    """Wait until ``url`` (served by ``proc``) answers 200; fails with ``proc``'s log if it exits first."""

    def up() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(proc.log())
        try:
            return requests.get(url, timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    wait_until(up, timeout, what=f"{proc.name} to answer {url}")


def procfile_command(process: str) -> str:
    """The command of the Procfile's ``process`` line."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return next(line.partition(":")[2].strip() for line in lines if line.startswith(f"{process}:"))


def procfile_queues(process: str) -> str:
    """The ``--queues`` of a Procfile process."""
    return re.search(r"--queues[= ](\S+)", procfile_command(process)).group(1)


class Proc(processes.LoggedProcess):
    """One subprocess with its log file; killed by pid like an operator (or the OOM killer) would."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
        super().__init__(name, argv, env=env, cwd=ROOT, log_path=log_path)

    def stop(self, timeout: float = 15, *, terminate_group: bool = True) -> None:
        """SIGTERM to the whole process group; SIGKILL to it after ``timeout`` seconds."""
        super().stop(timeout, terminate_group=terminate_group)


class Stack:
    """Starts and tracks the app's processes for one test module; stops them all at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path, argv_prefix: Sequence[str] = ()) -> None:
        """``argv_prefix`` goes before every command (``ip netns exec <namespace>``: the processes
        run on one of the hosts of tests/helpers/hosts.py)."""
        self.argv_prefix = list(argv_prefix)
        self.env = {
            **os.environ,
            **env,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
        self.log_dir = log_dir
        self.prefix = env.get("ETL_BROKER_KEY_PREFIX", "")  # this stack's broker keys
        self.procs: list[Proc] = []
        self.web_url: str | None = None

    def _start(self, name: str, argv: list[str], **env: str) -> Proc:
        proc = Proc(name, [*self.argv_prefix, *argv], {**self.env, **env}, self.log_dir)
        self.procs.append(proc)
        return proc

    def worker(
        self,
        concurrency: int = 2,
        name: str = "worker",
        app: str = "wsgi:celery",
        queues: str = "etl,jobs,lookups,uploads,dead_letter",
        hostname: str | None = None,
        **env: str,
    ) -> Proc:
        """A ``celery worker`` (``app``: the ``-A`` argument) on ``queues``, returned once it is
        ready; its node name is ``hostname``, else ``<name>-<pid of the test>@<machine>``."""
        proc = self._start(
            name,
            [
                str(BIN / "celery"),
                "-A",
                app,
                "worker",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--hostname",
                hostname or f"{name}-{os.getpid()}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            **env,
        )
        wait_until(lambda: " ready." in proc.log() or proc.popen.poll() is not None, 60, what=f"{name} to be ready")
        assert proc.popen.poll() is None, proc.log()
        return proc

    def beat(self, app: str = "wsgi:celery", name: str = "beat", **env: str) -> Proc:
        schedule = self.log_dir / f"beat-{time.time_ns()}"
        return self._start(
            name,
            [str(BIN / "celery"), "-A", app, "beat", "--loglevel", "INFO", "--schedule", str(schedule)],
            **env,
        )

    def web(self, workers: int = 2, bind: str = "127.0.0.1", app: str = "wsgi:app", **env: str) -> Proc:
        """gunicorn on a free port of ``bind`` (a free port of 127.0.0.1: free on a host's own
        address too), serving ``app`` (the WSGI target)."""
        port = free_port()
        proc = self._start(
            "web",
            [
                str(BIN / "gunicorn"),
                app,
                "--bind",
                f"{bind}:{port}",
                "--workers",
                str(workers),
                "--worker-class",
                "etl_app.web.worker.WebWorker",
                "--timeout",
                "60",
                "--no-control-socket",
            ],
            **env,
        )
        self.web_url = f"http://{bind}:{port}"
        wait_answering(proc, f"{self.web_url}/health")
        return proc

    def procfile(self, process: str, **env: str) -> Proc:
        """The Procfile's ``process`` line, run as honcho and other Procfile runners run it
        (``sh -c <line>``); not waited for."""
        return self._start(process, ["sh", "-c", procfile_command(process)], **env)

    def etl_app_run(self, var_dir: Path, **env: str) -> Proc:
        """``etl-app run`` (migrate, then every Procfile process under its supervisor) on the
        stack's database and Redis, with ``var_dir`` as its ./var and ports of its own
        (``WEB_PORT`` is ``web_url``'s); not waited for."""
        port = free_port()
        self.web_url = f"http://127.0.0.1:{port}"
        env = {"ETL_VAR_DIR": str(var_dir), "WEB_PORT": str(port), "FLOWER_PORT": str(free_port()), **env}
        return self._start("etl-app-run", [str(BIN / "etl-app"), "run"], **env)

    def kill_all(self) -> None:
        """SIGKILL every process of the stack (each whole process group), as a power cut would:
        all of them frozen first (SIGSTOP), so none goes on working while another is killed."""
        for proc in self.procs:
            proc.signal_group(signal.SIGSTOP)
        for proc in reversed(self.procs):
            proc.kill()
            proc.stop()
        self.procs.clear()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


@contextmanager
def running_stack(database_url: str, redis_url: str, log_dir: Path, **env: str) -> Iterator[Stack]:
    """A :class:`Stack` on this database and Redis with the test key and broker keys of its own
    (``stack.prefix``); nothing started yet. At the end every process stops and its keys go."""
    from tests.helpers.support import API_KEY, KEY_PREFIX, wipe_keys

    prefix = f"{KEY_PREFIX}{uuid.uuid4().hex[:8]}:"
    stack = Stack(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ETL_API_KEYS": API_KEY,
            "ETL_BROKER_KEY_PREFIX": prefix,
            **env,
        },
        log_dir,
    )
    try:
        yield stack
    finally:
        stack.stop()
        wipe_keys(redis_url, prefix)


def assert_a_quiet_start(log: str) -> None:
    """Banner, addresses, then the processes' own lines: no warning that every start repeats.
    As root the banner says once that the workers run as root, and no worker says it again;
    Flower does not report the workers that had not answered it yet as it started."""
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    assert log.count("  as root      the workers run as root") == (1 if as_root else 0), log
    assert "superuser privileges" not in log, log
    assert "Inspect method" not in log, log
