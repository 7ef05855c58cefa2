"""Scheduled jobs: list them with their last runs, run one now.

- ``GET /api/v1/jobs``: every job (etl_app.jobs.registry) with its schedule (UTC crontab or
  interval, and the variable that sets it), the window a run started now would cover, its last
  run and its recent runs (newest first).
- ``GET /api/v1/jobs/<name>``: one job with its last 50 runs; 404 for an unknown job.
- ``POST /api/v1/jobs/<name>/run``: body empty (the job's default window) or
  ``{"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}`` (both inclusive; ``from`` alone runs through
  today). Queues the job's task on the ``jobs`` queue and answers 202 ``{job, task_id, window}``;
  the worker runs it through the same runner and lock as beat (a run that finds the lock held is
  recorded ``skipped``), with trigger ``api``. 404 unknown job; 400 bad dates, or a window given
  to a job that works as of now; 503 when the broker does not take the task within
  ETL_PUBLISH_TIMEOUT_SECONDS.

Reading needs the ``read`` right, running the ``operate`` right (operator, admin). The run is
audited by the runner with the key id of the key that asked for it (passed in the task's kwargs);
a run the broker did not take is audited ``failed`` here.
"""

from __future__ import annotations

from apispec import APISpec
from flask import Blueprint, jsonify, request

from etl_app.api.common import json_object_or_none
from etl_app.jobs.enqueue import JobNotQueued, queue_job_run
from etl_app.jobs.registry import JOBS, BadWindow, Job, UnknownJob, describe_job, get_job, window_from
from etl_app.jobs.runner import recent_runs
from etl_app.models import JOB_RUN_STATUSES, JOB_TRIGGERS
from etl_app.web.context import ApiError, current_key_id, current_runtime, request_id

bp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs")

RECENT = 10


def _job_or_404(name: str) -> Job:
    try:
        return get_job(name)
    except UnknownJob as exc:
        raise ApiError(404, "unknown_job", str(exc)) from None


@bp.get("")
def list_jobs():
    with current_runtime().engine.connect() as conn:
        runs = recent_runs(conn, list(JOBS), per_job=RECENT)
    return jsonify({"jobs": [describe_job(job, runs[job.name], current_runtime().settings) for job in JOBS.values()]})


@bp.get("/<name>")
def show_job(name: str):
    job = _job_or_404(name)
    with current_runtime().engine.connect() as conn:
        runs = recent_runs(conn, [job.name], per_job=50)
    return jsonify(describe_job(job, runs[job.name], current_runtime().settings))


@bp.post("/<name>/run")
def run_job_now(name: str):
    job = _job_or_404(name)
    body = json_object_or_none() or {}
    unknown = sorted(set(body) - {"from", "to"})
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown fields {unknown}: the body is {{from, to}}")
    start, end = body.get("from", request.args.get("from")), body.get("to", request.args.get("to"))
    try:
        window = window_from(job, start, end)
    except BadWindow as exc:
        raise ApiError(400, "invalid_window", str(exc)) from None
    try:
        queued = queue_job_run(
            current_runtime().publisher, job, window, actor=current_key_id(), request_id=request_id(), trigger="api"
        )
    except JobNotQueued as exc:
        raise ApiError(503, "broker_unavailable", str(exc)) from None
    response = jsonify(queued)
    response.status_code = 202
    return response


def openapi_paths(spec: APISpec) -> None:
    """The jobs' paths in the OpenAPI document."""
    text, day = {"type": "string"}, {"type": "string", "format": "date"}
    moment = {"type": "string", "format": "date-time"}
    window = {"type": "object", "properties": {"from": day, "to": day}, "additionalProperties": False}
    spec.components.schema(
        "JobRun",
        {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "window": window,
                "trigger": {"type": "string", "enum": list(JOB_TRIGGERS)},
                "status": {"type": "string", "enum": list(JOB_RUN_STATUSES)},
                "task_id": {**text, "nullable": True},
                "started_at": moment,
                "finished_at": {**moment, "nullable": True},
                "rows": {"type": "integer", "nullable": True, "description": "rows the run touched"},
                "error": {**text, "nullable": True, "description": "why it failed, or which run held the lock"},
            },
        },
    )
    run = {"$ref": "#/components/schemas/JobRun"}
    spec.components.schema(
        "Job",
        {
            "type": "object",
            "properties": {
                "name": text,
                "task": text,
                "description": text,
                "schedule": {**text, "description": "crontab 'm h dom mon dow' (UTC), or 'every N s'"},
                "schedule_variable": text,
                "takes_window": {"type": "boolean"},
                "default_window": window,
                "records": text,
                "last_run": {**run, "nullable": True},
                "recent_runs": {"type": "array", "items": run},
            },
        },
    )
    job = {"$ref": "#/components/schemas/Job"}
    security, tags = [{"bearer": []}], ["jobs"]
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": list(JOBS)}}]
    error = {"$ref": "#/components/schemas/Error"}

    def answer(description: str, schema: dict | None = None) -> dict:
        return {"description": description, "content": {"application/json": {"schema": schema or error}}}

    spec.path(
        path="/api/v1/jobs",
        operations={
            "get": {
                "summary": "The scheduled jobs, their schedules and recent runs",
                "tags": tags,
                "security": security,
                "responses": {
                    "200": answer("jobs", {"type": "object", "properties": {"jobs": {"type": "array", "items": job}}}),
                    "401": answer("missing or wrong API key"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/jobs/{name}",
        operations={
            "get": {
                "summary": "One job and its last 50 runs",
                "tags": tags,
                "security": security,
                "parameters": name,
                "responses": {
                    "200": answer("the job", job),
                    "401": answer("missing or wrong API key"),
                    "404": answer("unknown job"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/jobs/{name}/run",
        operations={
            "post": {
                "summary": "Run a job now (queued on the jobs queue; same lock as beat)",
                "tags": tags,
                "security": security,
                "parameters": name,
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": window}},
                },
                "responses": {
                    "202": answer(
                        "queued",
                        {
                            "type": "object",
                            "properties": {
                                "job": text,
                                "task_id": text,
                                "window": {**window, "nullable": True},
                                "status": text,
                            },
                        },
                    ),
                    "400": answer("bad dates, or a window for a job that takes none"),
                    "401": answer("missing or wrong API key"),
                    "404": answer("unknown job"),
                    "503": answer("the broker did not take the task"),
                },
            }
        },
    )
