"""celeryconfig.py spells the task and queue names again (it imports nothing of the project):
they must name what the app registers and routes, or messages go nowhere."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest

import celeryconfig
from etl_app import names
from etl_app.celery_app import make_celery

ETL_TASKS = {names.VALIDATE, names.ENRICH, names.PERSIST, names.DEAD_LETTER, names.SWEEP_OUTBOX}


@pytest.fixture(scope="module")
def celery_app():
    return make_celery("etl_app", "redis://127.0.0.1:6379/15")


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
    expected = {name: names.PIPELINE_QUEUE for name in ETL_TASKS} | {
        names.DEAD_LETTER: names.DEAD_LETTER_QUEUE,
        names.SWEEP_OUTBOX: names.JOBS_QUEUE,
    }
    routed = {name: celery_app.amqp.router.route({}, name)["queue"].name for name in ETL_TASKS}
    assert routed == expected
