"""Scheduled jobs run by Celery beat: one task per job of :mod:`etl_app.jobs.registry`, each a
thin call of the runner (:func:`etl_app.jobs.runner.run_job`), which takes the job's lock, so a
second beat started by mistake never doubles a run. Routed to the ``jobs`` queue."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from etl_app import names
from etl_app.jobs.registry import OUTBOX_SWEEPER, get_job, window_from
from etl_app.jobs.runner import run_job
from etl_app.models import FAILED
from tasks.base import EtlTask

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """The job ran and failed (its run is recorded ``failed`` in job_runs with the error)."""


def _run(
    task: EtlTask,
    job: str,
    window: dict[str, str] | None,
    trigger: str,
    actor: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """``window``: ``{"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}`` from ``POST /api/v1/jobs/<name>/run``;
    beat sends none (the job's default window). ``actor``, ``request_id``: the API key id and the
    HTTP request that asked for the run, for the audit trail. The outcome (a skipped run too) is
    the result."""
    days = window_from(get_job(job), window.get("from"), window.get("to")) if window else None
    runtime = task.runtime
    outcome = run_job(
        runtime.engine,
        job,
        days,
        trigger,
        settings=runtime.settings,
        tools=runtime.job_tools,
        task_id=task.request.id,
        actor=actor,
        request_id=request_id,
    )
    if outcome.status == FAILED:
        raise JobFailed(f"{job}: {outcome.error}")
    return outcome.as_dict()


@shared_task(name=names.SWEEP_OUTBOX, base=EtlTask, bind=True, retries_transient_errors=False)
def sweep_outbox(self: EtlTask) -> int:
    """The outbox sweeper (:mod:`etl_app.jobs.sweeper`). It does not retry on errors (beat runs it
    again next interval); a sweep that finds another holding the lock does nothing."""
    return _sweep(self)


@shared_task(name=names.SWEEP_OUTBOX_FORMER, base=EtlTask, bind=True, retries_transient_errors=False)
def sweep_outbox_former_name(self: EtlTask) -> int:
    """The sweeper under its former task name (``names.SWEEP_OUTBOX_FORMER``)."""
    return _sweep(self)


def _sweep(self: EtlTask) -> int:
    runtime = self.runtime
    outcome = run_job(
        runtime.engine,
        OUTBOX_SWEEPER,
        trigger="beat",
        settings=runtime.settings,
        tools=runtime.job_tools,
        task_id=self.request.id,
    )
    if outcome.status == FAILED:
        raise JobFailed(f"{OUTBOX_SWEEPER}: {outcome.error}")
    return outcome.rows or 0


def _job_task(job: str, task_name: str):
    @shared_task(name=task_name, base=EtlTask, bind=True, retries_transient_errors=False)
    def run(
        self: EtlTask,
        window: dict[str, str] | None = None,
        trigger: str = "beat",
        actor: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Run the job (beat sends no arguments; the API's run-now a window, ``trigger="api"`` and
        the asking key's id as ``actor``)."""
        return _run(self, job, window, trigger, actor, request_id)

    return run


re_enrich = _job_task("re-enrich", names.RE_ENRICH)
daily_quality = _job_task("daily-quality", names.DAILY_QUALITY)
tutor_rollups = _job_task("tutor-rollups", names.TUTOR_ROLLUPS)
retention = _job_task("retention", names.RETENTION)
lookup_refresh = _job_task("lookup-refresh", names.LOOKUP_REFRESH)
quality_recompute = _job_task("quality-recompute", names.QUALITY_RECOMPUTE)
