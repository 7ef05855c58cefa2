"""The processes the benchmark starts: the app's own (from the Procfile) and the naive worker.

Each runs in its own session with its output in a log file; :class:`Processes` stops every
one it started (SIGTERM to the main process, then SIGKILL to its process group), and a process
whose launcher dies gets SIGTERM from the kernel (PR_SET_PDEATHSIG), so nothing is left behind
(see :mod:`etl_app.local.processes`).
"""

from __future__ import annotations

import http.client
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from etl_app.local import processes
from etl_app.local.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Procfile types that are not part of what is measured.
SKIPPED_TYPES = ("release", "beat", "flower")


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """:func:`etl_app.local.processes.wait_until` (a TimeoutError on timeout), ``what`` third."""
    return processes.wait_until(check, timeout, interval, what)


class Proc(processes.LoggedProcess):
    """One subprocess in its own process group, logging to ``<log_dir>/<name>.log``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        super().__init__(name, argv, env=env, cwd=ROOT, log_path=log_dir / f"{name}.log")


class Processes:
    """Everything the benchmark started; ``stop_all`` ends them in reverse order."""

    def __init__(self, log_dir: Path, base_env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = {
            **base_env,
            "PATH": f"{BIN}{os.pathsep}{base_env.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], **env: str) -> Proc:
        proc = Proc(name, argv, {**self.env, **env}, self.log_dir)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 20) -> None:
        proc.stop(timeout)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self, timeout: float = 20) -> None:
        """``timeout``: seconds each main process gets after SIGTERM before its group is killed."""
        while self.procs:
            self.stop(self.procs[-1], timeout)


def procfile(path: Path = ROOT / "Procfile") -> dict[str, str]:
    """Process type → command line."""
    out = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line.strip())
        if match:
            out[match.group(1)] = match.group(2)
    return out


def wait_worker_ready(proc: Proc, timeout: float = 90) -> None:
    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log()[-3000:]}")
        return " ready." in proc.log()

    wait_until(ready, timeout, f"{proc.name} to be ready")


def wait_http_ok(proc: Proc, port: int, path: str = "/health", timeout: float = 90) -> None:
    def up() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log()[-3000:]}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    wait_until(up, timeout, f"{proc.name} to answer {path}")


def start_app(procs: Processes, web_concurrency: int = 2, worker_concurrency: int = 2) -> tuple[dict[str, Proc], int]:
    """Start the Procfile's processes (web, worker and any other type but release/beat/flower),
    each through ``sh -c`` so that its ``${VAR:-default}`` settings apply. Returns them by type
    and the web port."""
    port = free_port()
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_PORT": str(port),
        "WEB_CONCURRENCY": str(web_concurrency),
        "WORKER_CONCURRENCY": str(worker_concurrency),
    }
    started: dict[str, Proc] = {}
    for name, command in procfile().items():
        if name in SKIPPED_TYPES:
            continue
        started[name] = procs.start(name, ["sh", "-c", f"exec {command}"], **env)
    if "web" not in started or "worker" not in started:
        raise RuntimeError("the Procfile has no web or no worker process")
    wait_worker_ready(started["worker"])
    wait_http_ok(started["web"], port)
    return started, port
