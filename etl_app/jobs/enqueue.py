"""Queueing a run of a scheduled job now: the one function behind ``POST /api/v1/jobs/<name>/run``
and the Jobs page's "Run now". The worker runs the task through the same runner and lock as beat
(:func:`etl_app.jobs.runner.run_job`), which audits the run with the key id passed here."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from etl_app import audit
from etl_app.jobs.context import Window
from etl_app.names import JOBS_QUEUE
from etl_app.pipeline.messages import publish_options

if TYPE_CHECKING:
    from etl_app.ingest.send import Publisher
    from etl_app.jobs.registry import Job

_sender = ThreadPoolExecutor(max_workers=2, thread_name_prefix="etl-jobs-send")


class JobNotQueued(Exception):
    """The broker did not take the run within ETL_PUBLISH_TIMEOUT_SECONDS (audited ``failed``)."""


def queue_job_run(
    publisher: Publisher, job: Job, window: Window | None, *, actor: str | None, request_id: str | None, trigger: str
) -> dict[str, Any]:
    """Send the job's task to the ``jobs`` queue; ``{job, task_id, window, status: queued}``.
    Raises :class:`JobNotQueued` when the broker does not take it in time."""
    days = {"from": window.start.isoformat(), "to": window.end.isoformat()} if window else None
    task_id = str(uuid.uuid4())

    def send() -> None:
        publisher.celery.send_task(
            job.task_name,
            kwargs={"window": days, "trigger": trigger, "actor": actor, "request_id": request_id},
            task_id=task_id,
            queue=JOBS_QUEUE,
            **publish_options(),
        )

    try:
        _sender.submit(send).result(timeout=publisher.timeout)
    except Exception as exc:  # noqa: BLE001 - broker down or slow: nothing was queued (or it runs late)
        target = {"job": job.name, "window": days, "task_id": task_id}
        message = f"not queued: {exc or 'timed out'}"
        audit.record_alone(
            publisher.engine,
            audit.Entry(actor or "unknown", "job_run", target, None, audit.FAILED, message, request_id),
        )
        raise JobNotQueued(f"the job could not be queued: {exc or 'timed out'}") from None
    return {"job": job.name, "task_id": task_id, "window": days, "status": "queued"}
