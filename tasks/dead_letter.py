"""The dead-letter consumer: writes dead_letters and marks the raw records dead, atomically."""

from __future__ import annotations

from celery import shared_task

from etl_app import errors
from etl_app.deadletters import actions
from etl_app.deadletters.store import Failure, dead_letter
from tasks.base import EtlTask


@shared_task(name="etl.dead_letter.record", base=EtlTask, bind=True)
def record(self: EtlTask, record_type: str, failures: list[dict], task_name: str) -> int:
    """Store each failure once (a redelivery changes nothing); returns how many were new.

    A ``missing_parent`` record whose parent landed while it was being dead-lettered is replayed
    at once (the parent's persist could not see it dead yet)."""
    rows = [
        Failure(int(f["id"]), f["error_type"], f["error"], f.get("traceback"), f.get("waiting_on")) for f in failures
    ]
    orphans = [f.raw_id for f in rows if f.error_type == errors.MISSING_PARENT]
    runtime = self.runtime
    with runtime.engine.begin() as conn:
        new = dead_letter(conn, rows, task_name)
        replayed = actions.replay_if_parents_exist(conn, runtime.registry, orphans)
    actions.publish(runtime.engine, self.app, replayed, chunk_size=runtime.settings.chunk_size, timeout=None)
    return len(new)
