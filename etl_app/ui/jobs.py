"""The Jobs page: the scheduled jobs, their schedule, last runs with outcome and rows touched, and
"Run now" for operators (the same :func:`etl_app.jobs.enqueue.queue_job_run` as the API)."""

from __future__ import annotations

from flask import flash, jsonify, redirect, request, url_for

from etl_app.jobs.enqueue import JobNotQueued, queue_job_run
from etl_app.jobs.registry import JOBS, BadWindow, UnknownJob, describe_job, get_job, window_from
from etl_app.jobs.runner import recent_runs
from etl_app.ui.blueprint import bp, render
from etl_app.ui.session import current_user, requires_operate
from etl_app.web.context import current_runtime, request_id

RECENT = 10


def _jobs() -> list[dict]:
    runtime = current_runtime()
    with runtime.engine.connect() as conn:
        runs = recent_runs(conn, list(JOBS), per_job=RECENT)
    return [describe_job(job, runs[job.name], runtime.settings) for job in JOBS.values()]


@bp.get("/jobs")
def jobs():
    return render("ui/jobs.html", title="Jobs", active="ui.jobs", jobs=_jobs())


@bp.get("/api/jobs")
def jobs_json():
    return jsonify({"jobs": _jobs()})


@bp.post("/jobs/<name>/run")
@requires_operate("job_run", lambda name: {"job": name})
def run_job(name: str):
    try:
        job = get_job(name)
    except UnknownJob:
        return render("ui/error.html", title="Not found", message=f"There is no job {name!r}."), 404
    try:
        window = window_from(
            job,
            request.form.get("from") or None,
            request.form.get("to") or None,
            max_days=current_runtime().settings.job_max_window_days,
        )
        queued = queue_job_run(
            current_runtime().publisher,
            job,
            window,
            actor=current_user().key_id,
            request_id=request_id(),
            trigger="api",
        )
    except BadWindow as exc:
        flash(f"{name}: {exc}", "error")
    except JobNotQueued as exc:
        flash(f"{name}: {exc}", "error")
    else:
        flash(f"{name} queued (task {queued['task_id']}); its run appears below once a worker takes it.", "ok")
    return redirect(url_for("ui.jobs"))
