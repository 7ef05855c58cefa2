"""The base tasks, run by a real Celery worker: ``tasks/base.py``'s EtlTask (the unit of work and the
retry policy) and ``tasks/chunks.py``'s ChunkTask (a chunk that fails for good is split, its one
bad record dead-lettered).

The worker is the ``celery_worker`` fixture of Celery's own pytest plugin (celery.contrib.pytest,
loaded here by ``pytest_plugins``): a worker thread in this process, solo pool, consuming the
test's queue and ``dead_letter`` for the project's own Celery app (celeryconfig.py, this test's
broker keys on the test Redis, the test database). No eager mode: every call, every retry is a
message through Redis. Each test sends a small task of its own, built on one of the bases, and
looks at what there is to see afterwards: the messages left in the queues, the rows in
PostgreSQL, the dead letter as ``GET /api/v1/dead-letters`` shows it.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import redis
import sqlalchemy as sa
from celery.signals import task_postrun

from etl_app.names import DEAD_LETTER, DEAD_LETTER_QUEUE, PIPELINE_QUEUE
from etl_app.pipeline.messages import chunk_message
from tasks.base import EtlTask
from tasks.chunks import ChunkTask

from tests.helpers.dead_letters import raw_row, store
from tests.helpers.payloads import student
from tests.helpers.procs import wait_until

pytest_plugins = ("celery.contrib.pytest",)  # celery's own fixtures: celery_app, celery_worker

QUEUE = "task_base"  # the worker consumes it and dead_letter, nothing else
SINK = "task_base_sink"  # what the tasks send after their commit; nobody consumes it
FLAKY = "tests.task_base.flaky"
GIVES_UP = "tests.task_base.gives_up"
REFUSED = "tests.task_base.refused"
MARKS = "tests.task_base.marks"
BUDGETS = {"internal": 2, "persistence": 3}  # ETL_TRANSIENT_MAX_RETRIES, ETL_RETRY_BUDGETS=persistence=3


def transient(error_type: str) -> Exception:
    """An exception that etl_app.errors.classify finds transient, of this error type."""
    if error_type == "persistence":  # the database went away mid-statement
        return sa.exc.OperationalError("SELECT 1", None, psycopg.OperationalError("server closed the connection"))
    return redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


class Runs:
    """The calls the worker has finished (Celery's task_postrun): ``(task name, retries, state)``."""

    def __init__(self) -> None:
        self.done: list[tuple[str, int, str]] = []
        self._changed = threading.Condition()

    def __call__(self, task=None, state=None, **_kwargs: Any) -> None:
        with self._changed:
            self.done.append((task.name, task.request.retries, state))
            self._changed.notify_all()

    def of(self, name: str) -> list[tuple[int, str]]:
        with self._changed:
            return [(retries, state) for task, retries, state in self.done if task == name]

    def wait(self, name: str, until: Callable[[list[tuple[int, str]]], bool], timeout: float = 30) -> list:
        """The calls of ``name`` once ``until`` holds for them."""
        with self._changed:
            if not self._changed.wait_for(lambda: until(self.of(name)), timeout):
                raise AssertionError(f"{name}: {self.of(name)} after {timeout}s")
        return self.of(name)

    def wait_finished(self, name: str, timeout: float = 30) -> list:
        """The calls of ``name`` once one of them ended for good (anything but a retry)."""
        return self.wait(name, lambda calls: any(state != "RETRY" for _, state in calls), timeout)


@pytest.fixture
def runs() -> Any:
    recorder = Runs()
    task_postrun.connect(recorder, weak=False)
    yield recorder
    task_postrun.disconnect(recorder)


@pytest.fixture
def flask_app(make_app):
    return make_app(
        transient_max_retries=BUDGETS["internal"],
        retry_budgets={"persistence": BUDGETS["persistence"]},
        retry_backoff_seconds=0.05,  # 0.025 to 0.05 s before the first retry, then doubling
        retry_backoff_max_seconds=1,
    )


@pytest.fixture
def celery_app(flask_app, runs):
    """celery.contrib.pytest's app, here the project's own, with this module's tasks registered
    before the worker starts (a worker refuses tasks it did not know at its start)."""
    app = flask_app.extensions["celery"]
    app.finalize()

    @app.task(name=FLAKY, base=EtlTask, bind=True, shared=False)
    def flaky(self: EtlTask, message: dict) -> None:
        raise transient(message["error_type"])

    @app.task(name=GIVES_UP, base=EtlTask, bind=True, shared=False, retries_transient_errors=False)
    def gives_up(self: EtlTask, message: dict) -> None:
        raise transient("internal")

    @app.task(name=REFUSED, base=ChunkTask, bind=True, shared=False)
    def refused(self: ChunkTask, message: dict) -> None:
        """Every chunk is refused by PostgreSQL: a DataError, which is permanent."""
        self.db.execute(sa.text("SELECT 1 / 0 FROM raw_records WHERE id = ANY(:ids)"), {"ids": message["ids"]})

    @app.task(name=MARKS, base=EtlTask, bind=True, shared=False)
    def marks(self: EtlTask, message: dict) -> None:
        """Appends ``call <retries>;`` to the record's last_error and holds a message for SINK;
        then fails as ``message["fail"]`` says on the first call (``transient``, ``permanent``)."""
        retries = self.request.retries
        self.db.execute(
            sa.text("UPDATE raw_records SET last_error = coalesce(last_error, '') || :mark WHERE id = :id"),
            {"mark": f"call {retries};", "id": message["id"]},
        )
        self.after_commit(lambda: self.app.send_task("tests.task_base.sink", args=[retries], queue=SINK))
        if retries == 0 and message["fail"] == "transient":
            raise transient("persistence")
        if message["fail"] == "permanent":
            raise ValueError("the record is wrong")

    return app


@pytest.fixture
def celery_worker_parameters() -> dict[str, Any]:
    # no ping: its reply needs a result backend, which the project has none of; INFO is the level
    # create_app sets, which the worker's logging setup would otherwise lower for later tests
    return {"queues": (QUEUE, DEAD_LETTER_QUEUE), "perform_ping_check": False, "loglevel": "INFO"}


class Broker:
    """This test's broker keys on the test Redis."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.prefix = prefix

    def queued(self, queue: str) -> list[tuple[str, Any, list[str]]]:
        """The messages waiting in ``queue``, oldest first: (task name, first argument, the names
        of the chain's next tasks)."""
        out = []
        for raw in reversed(self.client.lrange(f"{self.prefix}{queue}", 0, -1)):
            envelope = json.loads(raw)
            args, _kwargs, embed = json.loads(base64.b64decode(envelope["body"]))
            chain = [sig["task"] for sig in reversed((embed or {}).get("chain") or [])]
            out.append((envelope["headers"]["task"], args[0] if args else None, chain))
        return out

    def pending(self) -> bool:
        """Whether a message of the worker's queue waits, or is held by the worker (unacked)."""
        return bool(self.client.llen(f"{self.prefix}{QUEUE}") or self.client.hlen(f"{self.prefix}unacked"))


@pytest.fixture
def broker(api_redis_url: str, broker_prefix: str):
    keys = Broker(api_redis_url, broker_prefix)
    yield keys
    keys.client.close()


# -- the retry policy -----------------------------------------------------------------------------


@pytest.mark.parametrize("error_type", ["internal", "persistence"])
def test_a_transient_error_retries_within_its_budget_then_gives_up(celery_app, celery_worker, runs, broker, error_type):
    celery_app.tasks[FLAKY].apply_async(args=[{"error_type": error_type}], queue=QUEUE)
    calls = runs.wait_finished(FLAKY)
    budget = BUDGETS[error_type]
    assert calls == [(n, "RETRY") for n in range(budget)] + [(budget, "SUCCESS")]  # gave up quietly
    wait_until(lambda: not broker.pending(), 10, what="the last call to be acknowledged")
    assert runs.of(FLAKY) == calls  # no retry past the budget


def test_a_task_that_does_not_retry_gives_up_at_once(celery_app, celery_worker, runs, broker):
    celery_app.tasks[GIVES_UP].apply_async(args=[{}], queue=QUEUE)
    assert runs.wait_finished(GIVES_UP) == [(0, "SUCCESS")]
    wait_until(lambda: not broker.pending(), 10, what="the call to be acknowledged")
    assert runs.of(GIVES_UP) == [(0, "SUCCESS")]


# -- the unit of work -----------------------------------------------------------------------------


def test_a_failed_call_is_rolled_back_and_its_held_sends_never_reach_the_broker(
    celery_app, celery_worker, runs, broker, engine, unique
):
    [raw_id] = store(engine, "students", [student(unique)]).ids
    celery_app.tasks[MARKS].apply_async(args=[{"id": raw_id, "fail": "permanent"}], queue=QUEUE)
    assert runs.wait_finished(MARKS) == [(0, "FAILURE")]  # EtlTask's hook raises it again
    assert raw_row(engine, raw_id).last_error is None
    assert broker.queued(SINK) == []


def test_a_retried_call_commits_and_sends_only_what_its_successful_retry_did(
    celery_app, celery_worker, runs, broker, engine, unique
):
    [raw_id] = store(engine, "students", [student(unique)]).ids
    celery_app.tasks[MARKS].apply_async(args=[{"id": raw_id, "fail": "transient"}], queue=QUEUE)
    assert runs.wait_finished(MARKS) == [(0, "RETRY"), (1, "SUCCESS")]
    assert raw_row(engine, raw_id).last_error == "call 1;"
    assert broker.queued(SINK) == [("tests.task_base.sink", 1, [])]


# -- chunks ---------------------------------------------------------------------------------------


def test_a_chunk_of_4_that_fails_for_good_is_split_into_two_chains_of_2(
    celery_app, celery_worker, runs, broker, engine, unique
):
    ids = store(engine, "students", [student(f"{unique}-{i}") for i in range(4)]).ids
    celery_app.tasks[REFUSED].apply_async(args=[chunk_message("students", ids)], queue=QUEUE)
    assert runs.wait_finished(REFUSED) == [(0, "SUCCESS")]
    chains = broker.queued(PIPELINE_QUEUE)
    assert [(task, message["type"], message["ids"], chain) for task, message, chain in chains] == [
        ("etl.validate", "students", ids[:2], ["etl.enrich", "etl.persist"]),
        ("etl.validate", "students", ids[2:], ["etl.enrich", "etl.persist"]),
    ]
    assert runs.of(DEAD_LETTER) == [] and broker.queued(DEAD_LETTER_QUEUE) == []
    assert {raw_row(engine, i).status for i in ids} == {"received"}


def test_a_chunk_of_1_that_fails_for_good_is_dead_lettered_with_its_error(
    celery_app, celery_worker, runs, broker, engine, unique, flask_app, auth
):
    accepted = store(engine, "students", [student(unique)])
    celery_app.tasks[REFUSED].apply_async(args=[chunk_message("students", accepted.ids)], queue=QUEUE)
    assert runs.wait_finished(REFUSED) == [(0, "SUCCESS")]
    assert runs.wait_finished(DEAD_LETTER) == [(0, "SUCCESS")]
    assert broker.queued(PIPELINE_QUEUE) == []

    client = flask_app.test_client()
    listed = client.get("/api/v1/dead-letters", query_string={"ingestion_id": str(accepted.ingestion_id)}, headers=auth)
    [summary] = listed.get_json()["dead_letters"]
    shown = client.get(f"/api/v1/dead-letters/{summary['id']}", headers=auth).get_json()
    assert shown["error_type"] == "persistence"  # what PostgreSQL refuses it cannot store
    assert shown["error"].startswith("DataError: (psycopg.errors.DivisionByZero) division by zero")
    assert "sqlalchemy.exc.DataError: (psycopg.errors.DivisionByZero) division by zero" in shown["traceback"]
    assert "SELECT 1 / 0 FROM raw_records" in shown["traceback"]
    assert shown["task_name"] == REFUSED and shown["status"] == "open"
    assert shown["record_status"] == "dead" and shown["payload"] == student(unique)
    assert raw_row(engine, accepted.ids[0]).status == "dead"


def test_a_chunk_delivered_too_often_is_dead_lettered_without_running_again(
    celery_app, celery_worker, runs, broker, engine, unique, flask_app, auth, api_redis_url, broker_prefix
):
    accepted = store(engine, "students", [student(unique)])
    max_deliveries = flask_app.extensions["etl"].settings.max_deliveries
    task_id = f"{unique}-poison"
    # as if workers had died running it that often already
    redis.Redis.from_url(api_redis_url).set(f"{broker_prefix}etl:deliveries:{task_id}:0", max_deliveries)
    message = chunk_message("students", accepted.ids)
    celery_app.tasks[REFUSED].apply_async(args=[message], queue=QUEUE, task_id=task_id)
    assert runs.wait_finished(DEAD_LETTER) == [(0, "SUCCESS")]

    client = flask_app.test_client()
    listed = client.get("/api/v1/dead-letters", query_string={"ingestion_id": str(accepted.ingestion_id)}, headers=auth)
    [summary] = listed.get_json()["dead_letters"]
    shown = client.get(f"/api/v1/dead-letters/{summary['id']}", headers=auth).get_json()
    assert shown["error_type"] == "internal" and shown["traceback"] is None
    assert shown["error"] == (
        f"delivered more than {max_deliveries} times without finishing (the worker running it was lost each time)"
    )
