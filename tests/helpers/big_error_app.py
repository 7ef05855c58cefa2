"""A Celery app without the database, for tests/runtime/test_pool_partial_reads.py: its broker is
``$BIG_ERROR_BROKER``; Celery's prefork result reader is patched as the product's app patches it
(:mod:`etl_app.runtime.pool_partial_reads`). Start a worker with ``-A tests.helpers.big_error_app``
and the repository on PYTHONPATH."""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery

from etl_app.runtime import pool_partial_reads

pool_partial_reads.install()

app = Celery("big_error", broker=os.environ["BIG_ERROR_BROKER"])
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
ERROR_BYTES = 1_000_000  # far more than a pipe holds (64 KiB): the main process reads it in parts


@app.task(bind=True, name="big_error.fail")
def fail(self, marker: str) -> None:
    """Fail with a long error, once: the first delivery notes its pool process in ``marker``, waits
    a second (for the test to hold the main process), and raises."""
    if (self.request.delivery_info or {}).get("redelivered"):
        return
    Path(marker).write_text(str(os.getpid()))
    time.sleep(1)
    raise ValueError("x" * ERROR_BYTES)


@app.task(name="big_error.ping")
def ping() -> str:
    return "pong"
