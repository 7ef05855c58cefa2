"""Finding and stopping the embedded servers' processes.

A server left behind by a launcher that was killed is found by its working directory (PostgreSQL
runs in PGDATA, Redis in ``var/redis``) and its name, then stopped like any other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: How long a server gets to start, and to stop, before it counts as failed.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def processes_in(directory: Path, name: str) -> list[Any]:
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


def terminate(procs: list[Any], sig: int, timeout: float = 10.0) -> None:
    """Send ``sig``, wait, then SIGKILL whatever is left."""
    import psutil

    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
    alive = wait_gone(procs, timeout)
    for proc in alive:
        log.warning("pid %s did not exit; killing it", proc.pid)
        with contextlib.suppress(psutil.Error):
            proc.kill()
    wait_gone(alive, 5.0)


def wait_gone(procs: list[Any], timeout: float) -> list[Any]:
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


def terminate_popen(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: redis shuts down (nothing to save)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("redis-server (pid %s) did not exit; killing it", proc.pid)
            proc.kill()
            proc.wait(5)
