"""Scheduled jobs: list them with their last runs, run one now.

- ``GET /api/v1/jobs``: every job (etl_app.jobs.registry) with its schedule (UTC crontab or
  interval, and the variable that sets it), the window a run started now would cover, its last
  run and its recent runs (newest first).
- ``GET /api/v1/jobs/<name>``: one job with its last 50 runs; 404 for an unknown job.
- ``POST /api/v1/jobs/<name>/run``: body empty (the job's default window) or
  ``{"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}`` (both inclusive; ``from`` alone runs through
  today). Queues the job's task on the ``jobs`` queue and answers 202 ``{job, task_id, window}``;
  the worker runs it through the same runner and lock as beat (a run that finds the lock held is
  recorded ``skipped``), with trigger ``api``. 404 unknown job; 400 bad dates (days from 1970 to
  2100, at most ``ETL_JOB_MAX_WINDOW_DAYS`` of them), or a window given to a job that works as of
  now; 503 when the broker does not take the task within ETL_PUBLISH_TIMEOUT_SECONDS.

Reading needs the ``read`` right, running the ``operate`` right (operator, admin). The run is
audited by the runner with the key id of the key that asked for it (passed in the task's kwargs);
a run the broker did not take is audited ``failed`` here.
"""

from __future__ import annotations

from flask import Blueprint, request

from etl_app.api.bodies import one_of
from etl_app.api.bodies_operate import Job as JobBody
from etl_app.api.bodies_operate import JobQueued, Jobs, Window
from etl_app.api.common import json_object_or_none
from etl_app.api.spec import operation, reply
from etl_app.jobs.enqueue import JobNotQueued, queue_job_run
from etl_app.jobs.registry import JOBS, BadWindow, Job, UnknownJob, describe_job, get_job, window_from
from etl_app.jobs.runner import recent_runs
from etl_app.web.context import ApiError, current_key_id, current_runtime, request_id

bp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs")

RECENT = 10


def _job_or_404(name: str) -> Job:
    try:
        return get_job(name)
    except UnknownJob as exc:
        raise ApiError(404, "unknown_job", str(exc)) from None


TAGS = ["jobs"]
NAME = {"name": one_of(JOBS)}


@bp.get("")
@operation(summary="The scheduled jobs, their schedules and recent runs", tags=TAGS, responses={200: ("jobs", Jobs)})
def list_jobs():
    with current_runtime().engine.connect() as conn:
        runs = recent_runs(conn, list(JOBS), per_job=RECENT)
    return reply(
        Jobs, {"jobs": [describe_job(job, runs[job.name], current_runtime().settings) for job in JOBS.values()]}
    )


@bp.get("/<name>")
@operation(
    summary="One job and its last 50 runs",
    tags=TAGS,
    path=NAME,
    responses={200: ("the job", JobBody), 404: "unknown job"},
)
def show_job(name: str):
    job = _job_or_404(name)
    with current_runtime().engine.connect() as conn:
        runs = recent_runs(conn, [job.name], per_job=50)
    return reply(JobBody, describe_job(job, runs[job.name], current_runtime().settings))


@bp.post("/<name>/run")
@operation(
    summary="Run a job now (queued on the jobs queue; same lock as beat)",
    description="The body is empty (the job's default window) or `{from, to}` (both inclusive; `from` alone runs "
    "through today), only for the jobs that take a window (`takes_window` in GET /api/v1/jobs); `from` no later "
    "than `to`, days from 1970-01-01 to 2100-12-31, at most ETL_JOB_MAX_WINDOW_DAYS days (366 by default). "
    "`from` and `to` may be query parameters instead.",
    tags=TAGS,
    path=NAME,
    body=Window,
    body_required=False,
    body_in_query=True,
    responses={
        202: ("queued", JobQueued),
        400: "bad dates, or a window for a job that takes none",
        404: "unknown job",
        503: "the broker did not take the task",
    },
)
def run_job_now(name: str):
    job = _job_or_404(name)
    body = json_object_or_none() or {}
    unknown = sorted(set(body) - {"from", "to"})
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown fields {unknown}: the body is {{from, to}}")
    if None in body.values():
        raise ApiError(400, "invalid_body", "from and to are days (YYYY-MM-DD): leave one out rather than null")
    start, end = body.get("from", request.args.get("from")), body.get("to", request.args.get("to"))
    try:
        window = window_from(job, start, end, max_days=current_runtime().settings.job_max_window_days)
    except BadWindow as exc:
        raise ApiError(400, "invalid_window", str(exc)) from None
    try:
        queued = queue_job_run(
            current_runtime().publisher, job, window, actor=current_key_id(), request_id=request_id(), trigger="api"
        )
    except JobNotQueued as exc:
        raise ApiError(503, "broker_unavailable", str(exc)) from None
    return reply(JobQueued, queued, 202)
