"""Child processes for the tests and the benchmark: each in its own process group, logging to a file.

:class:`LoggedProcess` starts one program in a session of its own (a signal to it reaches its
own children, such as a celery worker's pool, and not its parent's terminal), writes its output
to a log file, stops it with SIGTERM and then SIGKILL to the whole group, and asks the kernel to
send it SIGTERM if the thread that started it dies (``PR_SET_PDEATHSIG``, Linux), so a killed
test run or benchmark leaves nothing behind. :func:`wait_until` polls a condition with a
deadline; :func:`free_port` picks a TCP port nobody listens on. tests/helpers/procs.py and bench/procs.py
build on these.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (another process may still take it first)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WaitTimeout(TimeoutError):
    """:func:`wait_until` gave up (and not a timeout raised by the check itself)."""


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Call ``check`` every ``interval`` seconds until it returns something true, and return that;
    :class:`WaitTimeout` naming ``what`` and the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise WaitTimeout(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def die_with_parent() -> None:
    """In a child before exec (``preexec_fn``): SIGTERM when the parent's starting thread dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LoggedProcess:
    """One subprocess in its own session and process group, its output appended to ``log_path``."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        """Pids of the live (not zombie) child processes, e.g. a celery worker's pool."""
        import psutil

        try:
            kids = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        alive = []
        for kid in kids:
            try:
                if kid.status() != psutil.STATUS_ZOMBIE:
                    alive.append(kid.pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the whole process group (nothing if it is gone)."""
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the main process and its children); wait for the main one."""
        self.signal_group(sig)
        self.popen.wait(timeout=30)

    def stop(self, timeout: float = 20, *, terminate_group: bool = False) -> None:
        """SIGTERM to the main process (which then stops its own children), or with
        ``terminate_group`` to every process of the group; SIGKILL to the group if the main
        process is not gone in ``timeout`` seconds, and to whatever is left of the group after
        it. Closes the log."""
        if self.alive():
            try:
                if terminate_group:
                    os.killpg(self.pid, signal.SIGTERM)
                else:
                    self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.signal_group(signal.SIGKILL)
                self.popen.wait(timeout=30)
        self.signal_group(signal.SIGKILL)
        self._log.close()
