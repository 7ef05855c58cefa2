"""The dead-letter consumer: writes dead_letters and marks the raw records dead, atomically."""

from __future__ import annotations

from celery import shared_task

from etl_app import pipeline
from tasks.base import EtlTask


@shared_task(name="etl.dead_letter.record", base=EtlTask, bind=True)
def record(self: EtlTask, record_type: str, failures: list[dict], task_name: str) -> int:
    """Store each failure once (a redelivery changes nothing); returns how many were new."""
    rows = [pipeline.Failure(int(f["id"]), f["error_type"], f["error"], f.get("traceback")) for f in failures]
    with self.runtime.engine.begin() as conn:
        return len(pipeline.dead_letter(conn, rows, task_name))
