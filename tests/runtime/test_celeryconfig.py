"""celeryconfig.py spells the task and queue names again (it imports nothing of the project):
they must name what the app registers and routes, or messages go nowhere."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from celery.schedules import crontab

import celeryconfig
from etl_app import names
from etl_app.runtime.celery_app import make_celery

pytestmark = pytest.mark.unit

ETL_TASKS = {
    names.VALIDATE,
    names.ENRICH,
    names.PERSIST,
    names.DEAD_LETTER,
    names.SWEEP_OUTBOX,
    names.SWEEP_OUTBOX_FORMER,
    names.PARSE_UPLOAD,
    *names.JOB_TASKS,
}


@pytest.fixture(scope="module")
def celery_app():
    app = make_celery("etl_app", "redis://127.0.0.1:6379/15")
    app.loader.import_default_modules()  # what a worker does at its start
    return app


def test_every_task_of_the_project_is_registered_under_its_name(celery_app):
    registered = {name for name in celery_app.tasks if name.startswith("etl.")}
    assert registered == ETL_TASKS


@pytest.mark.parametrize("pattern", sorted(celeryconfig.task_routes))
def test_every_route_names_registered_tasks_and_a_declared_queue(celery_app, pattern):
    assert any(fnmatchcase(name, pattern) for name in celery_app.tasks), f"route {pattern!r} matches no task"
    declared = {queue.name for queue in celeryconfig.task_queues}
    assert celeryconfig.task_routes[pattern]["queue"] in declared


@pytest.mark.parametrize("entry", sorted(celeryconfig.beat_schedule))
def test_every_beat_entry_runs_a_registered_task_on_a_declared_queue(celery_app, entry):
    job = celeryconfig.beat_schedule[entry]
    assert job["task"] in celery_app.tasks, f"beat entry {entry!r} runs an unknown task {job['task']!r}"
    assert job.get("options", {}).get("queue", celeryconfig.task_default_queue) in {
        queue.name for queue in celeryconfig.task_queues
    }


def test_each_task_is_routed_to_its_queue(celery_app):
    expected = (
        {name: names.PIPELINE_QUEUE for name in ETL_TASKS}
        | {
            names.DEAD_LETTER: names.DEAD_LETTER_QUEUE,
            names.SWEEP_OUTBOX: names.JOBS_QUEUE,
            names.SWEEP_OUTBOX_FORMER: names.JOBS_QUEUE,
            names.PARSE_UPLOAD: names.UPLOADS_QUEUE,  # never behind the chains of the file's slices
        }
        | {name: names.JOBS_QUEUE for name in names.JOB_TASKS}
    )
    routed = {name: celery_app.amqp.router.route({}, name)["queue"].name for name in ETL_TASKS}
    assert routed == expected


def test_every_job_of_the_registry_has_its_beat_entry_and_task():
    from etl_app.jobs.registry import JOBS

    entries = {entry["task"]: name for name, entry in celeryconfig.beat_schedule.items()}
    for job in JOBS.values():
        assert entries.get(job.task_name) == (job.name if job.scheduled else None), job.name
        assert job.task_name == f"etl.beat.{job.name}"  # one spelling: the job's name


def test_job_schedules_default_as_documented_and_are_configurable(monkeypatch):
    assert celeryconfig.job_schedule("30 2 * * *") == crontab(minute="30", hour="2")
    assert celeryconfig.job_schedule("5") == 5.0
    with pytest.raises(ValueError):
        celeryconfig.job_schedule("every day")
    defaults = {name: celeryconfig.job_schedule_expression(name) for name in celeryconfig.JOB_SCHEDULES}
    assert defaults == {
        "re-enrich": "30 2 * * *",
        "daily-quality": "20 0 * * *",
        "tutor-rollups": "10 * * * *",
        "retention": "30 3 * * *",
        "lookup-refresh": "60",
    }
    monkeypatch.setenv("ETL_SCHEDULE_RETENTION", "0 4 * * 1")
    assert celeryconfig.job_schedule_expression("retention") == "0 4 * * 1"
    schedule = celeryconfig.job_schedule("0 4 * * 1")
    assert (schedule.minute, schedule.hour, schedule.day_of_week) == ({0}, {4}, {1})  # Mondays at 04:00 UTC
