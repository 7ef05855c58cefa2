"""The app's Celery app with pool children that SIGKILL themselves once, for the fault tests.

Start a worker with ``-A tests.helpers.kill_app:celery`` and the repository on PYTHONPATH. ``ETL_TEST_KILL``
names kill points, comma-separated: ``<task name>:prerun`` (the task's body has not run yet) or
``<task name>:postrun`` (its body returned and committed; the message is not acknowledged yet).
The first task to reach a point, in whichever pool child, creates the file named after the
point in ``ETL_TEST_KILL_DIR`` (holding ``<task id> <pid>``), logs a line and SIGKILLs its own
process, as the OOM killer would. A point fires once; nothing else changes.

``etl.upload.parse:chunk<N>`` kills a pool child in the middle of reading an uploaded file: in the
N-th chunk that child stores, after its rows are written and before they are committed (the
chunks before it are committed, the slice is not done, its message not acknowledged).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from celery.signals import task_postrun, task_prerun

from wsgi import app, celery  # noqa: F401  (the -A target)

log = logging.getLogger(__name__)
POINTS = {p.strip() for p in os.environ.get("ETL_TEST_KILL", "").split(",") if p.strip()}
KILL_DIR = Path(os.environ.get("ETL_TEST_KILL_DIR", "."))


def _kill_once(task, task_id: str, when: str) -> None:
    point = f"{task.name}:{when}"
    if point not in POINTS:
        return
    try:
        fd = os.open(KILL_DIR / point, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # fired already
    os.write(fd, f"{task_id} {os.getpid()}".encode())
    os.close(fd)
    log.warning("kill_app: %s[%s] SIGKILLs its pool child pid:%d (%s)", task.name, task_id, os.getpid(), when)
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_in_upload_chunks() -> None:
    points = [p for p in POINTS if p.startswith("etl.upload.parse:chunk")]
    if not points:
        return
    from etl_app.uploads import parse

    (point,) = points
    nth = int(point.rsplit("chunk", 1)[1])
    store = parse._store_chunk
    calls = {"n": 0}

    class _Task:
        name = "etl.upload.parse"

    def store_then_maybe_die(*args, **kwargs):
        stored = store(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == nth:
            _kill_once(_Task, f"upload-{args[3].id}", f"chunk{nth}")
        return stored

    parse._store_chunk = store_then_maybe_die


_kill_in_upload_chunks()


@task_prerun.connect
def _before(task_id: str, task, **_) -> None:
    _kill_once(task, task_id, "prerun")


@task_postrun.connect
def _after(task_id: str, task, **_) -> None:
    _kill_once(task, task_id, "postrun")
