"""The app's WSGI app whose web process dies once right after a submit committed, before it
answers, for the fault tests.

Start gunicorn with ``tests.helpers.kill_web_app:app`` (``Stack.web(app=...)``) and the repository
on PYTHONPATH. With ``ETL_TEST_KILL_WEB=after_commit``, the first submit (one record, a batch or
NDJSON) whose ingestion, outbox rows and Idempotency-Key answer have committed, in whichever web
process, creates the file ``after_commit`` in ``ETL_TEST_KILL_DIR`` (holding ``<ingestion id>
<pid>``), logs a line and SIGKILLs its own process: the client's connection drops with no answer,
as when a host dies or the OOM killer strikes between a commit and the response. It fires once;
nothing else changes.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from etl_app.ingest import outbox
from wsgi import app, celery  # noqa: F401  (the gunicorn target)

log = logging.getLogger(__name__)
POINT = "after_commit"
KILL_DIR = Path(os.environ.get("ETL_TEST_KILL_DIR", "."))
_store_and_commit = outbox.store_and_commit


def _store_commit_then_die(*args, **kwargs):
    result = _store_and_commit(*args, **kwargs)  # committed when it returns
    try:
        fd = os.open(KILL_DIR / POINT, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return result  # fired already
    os.write(fd, f"{result.ingestion_id} {os.getpid()}".encode())
    os.close(fd)
    log.warning("kill_web_app: ingestion %s committed; SIGKILLs web pid:%d before answering", result.ingestion_id,
                os.getpid())  # fmt: skip
    os.kill(os.getpid(), signal.SIGKILL)
    return result


if os.environ.get("ETL_TEST_KILL_WEB") == POINT:
    outbox.store_and_commit = _store_commit_then_die
