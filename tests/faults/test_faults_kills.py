"""Process kills mid-batch: a pool child, the whole worker, every process and the broker's data.

Each test leaves one way for the lost work to come back: a killed pool child's message goes
back to the queue (task_reject_on_worker_lost; no beat, so no outbox sweeper). A killed
worker's messages are invisible on Redis for an hour (the visibility timeout), so the outbox
sweeper re-drives their records; RabbitMQ hands them to the next consumer as soon as the dead
worker's connection drops. A flushed broker's messages are gone on either: the outbox sweeper
alone re-drives their records."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers.faultlib import (
    Clock,
    assert_exactly_once,
    log_count,
    outcome,
    report,
    sweeper_runs,
    swept,
    wait_settled,
)
from tests.helpers.payloads import student
from tests.helpers.procs import ROOT, wait_until

pytestmark = pytest.mark.slow

BATCH = 20_000
COMPARE = ("name", "grade_level")
LOST = "WorkerLostError('Worker exited prematurely: signal 9"


def students(prefix: str, n: int) -> list[dict]:
    return [student(f"{prefix}-{i:05d}", name=f"Student {i}", grade_level=1 + i % 16) for i in range(n)]


def wait_persisted(engine, ingestion_id, at_least: int, timeout: float = 120, interval: float = 0.1) -> int:
    def enough() -> int | None:
        n = outcome(engine, [ingestion_id]).persisted
        return n if n >= at_least else None

    return wait_until(enough, timeout, interval, what=f"{at_least} records persisted")


def in_order(text: str, *needles: str) -> bool:
    """Whether ``text`` holds the needles one after the other."""
    at = 0
    for needle in needles:
        at = text.find(needle, at)
        if at < 0:
            return False
        at += len(needle)
    return True


# Where kill_app kills a pool child: an enrich before its body ran (nothing done yet), a persist
# after its body committed (the rows are written, the message is not acknowledged).
KILL_POINTS = ("etl.enrich:prerun", "etl.persist:postrun")


def wait_delivered_again(worker, kills: Path, point: str) -> str:
    """Wait until kill_app has killed a child at ``point``, and the worker has logged, in this
    order: the child's death, a task lost with it, the same task received again and succeeded.
    Returns the task (``name[id]``)."""
    name = point.split(":")[0]

    def fired() -> list[str] | None:
        path = kills / point
        fields = path.read_text().split() if path.exists() else []
        return fields if len(fields) == 2 else None

    task_id, pid = wait_until(fired, 60, what=f"a pool child killed at {point}")
    task = f"{name}[{task_id}]"
    wait_until(
        lambda: in_order(
            worker.log(),
            f"{task} SIGKILLs its pool child pid:{pid}",
            f"pid:{pid} exited with 'signal 9 (SIGKILL)'",
            LOST,
            f"Task {task} received",
            f"Task {task} succeeded in",
        ),
        120,
        what=f"{task}, its child killed, to be received again and succeed",
    )
    return task


def test_a_pool_child_killed_in_a_task_has_its_message_delivered_again(
    make_stack, fault_engine, registry, unique, tmp_path
):
    """task_acks_late + task_reject_on_worker_lost alone, without beat (so no outbox sweeper):
    the worker puts the message of a task whose child was SIGKILLed back on the queue, the same
    task is received again and succeeds, and the batch lands exactly once."""
    kills = tmp_path / "kills"
    kills.mkdir()
    stack = make_stack(PYTHONPATH=str(ROOT), ETL_TEST_KILL=",".join(KILL_POINTS), ETL_TEST_KILL_DIR=str(kills))
    api = stack.up(worker_app="tests.helpers.kill_app:celery", beat=False)
    worker = stack.procs[0]
    clock = Clock()
    api.submit("students/batch", students(unique, BATCH))
    lost = [wait_delivered_again(worker, kills, point) for point in KILL_POINTS]

    wait_settled(fault_engine, stack.answers.ingestion_ids, 180)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=COMPARE)
    assert (o.persisted, o.dead) == (BATCH, 0)
    assert worker.popen.poll() is None, "the worker's main process survives its children"
    assert [p.name for p in stack.procs] == ["worker", "web"], "no beat: nothing but redelivery brings a task back"
    assert (sweeper_runs(worker), swept(worker)) == (0, 0)
    report(
        "pool child SIGKILL in enrich and after persist",
        o,
        settle,
        lost_and_delivered_again=lost,
        tasks_lost_with_children=log_count(worker, LOST),
    )


def test_the_whole_worker_killed_mid_batch_and_started_again(make_stack, fault_engine, registry, unique):
    """On Redis the killed worker's reserved messages stay invisible until the visibility timeout
    (an hour) and the outbox sweeper re-drives their records after the short lease; on RabbitMQ
    they are back in their queue the moment the worker's connection drops. The worker
    prefetches 4 messages a child here, so that the kill surely strands some."""
    stack = make_stack(CELERY_PREFETCH_MULTIPLIER="4")
    api = stack.up()
    worker = stack.procs[0]
    clock = Clock()
    ing = api.submit("students/batch", students(unique, BATCH))["ingestion_id"]

    # Persisting has begun (most persists come last): freeze the worker's whole process group
    # at once, so the kill surely comes mid-batch however slowly the broker's counts follow
    # (rabbitmqctl's are refreshed every few seconds, longer than the batch takes to finish).
    wait_persisted(fault_engine, ing, 1, interval=0.02)
    worker.signal_group(signal.SIGSTOP)
    at_kill = outcome(fault_engine, [ing]).persisted
    held = wait_until(lambda: stack.pipeline_messages(queued=False), 30, 0.05, what="the worker to hold messages")
    worker.kill()  # SIGKILL to the process group: main process and pool children
    assert at_kill < BATCH, "the kill came after the batch was done"
    if stack.broker.name == "redis":
        stranded = stack.pipeline_messages(queued=False)
        assert stranded > 0, "the killed worker held no pipeline message"
    else:  # rabbitmqctl's counts are statistics, refreshed every few seconds
        stranded = 0
        wait_until(
            lambda: stack.pipeline_messages(queued=False) == 0,
            30,
            0.5,
            what="RabbitMQ to take the dead worker's messages back (no consumer is left to hold them)",
        )

    restarted = stack.worker(name="worker2")
    wait_settled(fault_engine, [ing], 180)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=COMPARE)
    assert (o.persisted, o.dead) == (BATCH, 0)
    if stack.broker.name == "redis":
        assert swept(restarted) > 0, "the sweeper should have re-driven the stranded records"
    report(
        "whole worker SIGKILL mid-batch, restarted",
        o,
        settle,
        persisted_at_kill=at_kill,
        messages_held_before_kill=held,
        messages_stranded_in_unacked=stranded,
        swept=swept(restarted),
    )


def test_every_process_killed_and_the_broker_flushed(make_stack, fault_engine, registry, unique):
    """Web, worker and beat SIGKILLed, every message of the broker gone (FLUSHALL on the private
    Redis, every queue of the stack's vhost purged on RabbitMQ). No message is left to be
    delivered again, and every record still unsettled had been
    published (the web relay sends only unpublished ones): PostgreSQL alone knows them, and the
    outbox sweeper alone can re-drive them. It re-drives every one."""
    stack = make_stack()
    api = stack.up()
    clock = Clock()
    ing = api.submit("students/batch", students(unique, BATCH))["ingestion_id"]

    wait_persisted(fault_engine, ing, 1)
    stack.kill_all()
    with fault_engine.connect() as conn:
        killed_at, unsettled, unpublished = conn.execute(
            sa.text(
                "SELECT now(), coalesce(array_agg(id), '{}'), count(*) FILTER (WHERE enqueued_at IS NULL) "
                "FROM raw_records WHERE status = 'received'"
            )
        ).one()
    assert unsettled, "the kill came after the batch was done"
    assert unpublished == 0, f"{unpublished} unsettled records were never published: the relay would send them"
    flushed = stack.flush_broker()
    # rabbitmqctl's counts are statistics refreshed every few seconds: they show the purge late
    wait_until(lambda: stack.pipeline_messages() == 0, 30, 0.5, what="the broker to hold no pipeline message")

    api = stack.up()
    worker = stack.procs[0]
    wait_until(
        lambda: swept(worker) >= len(unsettled),
        120,
        what=f"the sweeper to re-drive the {len(unsettled)} records unsettled at the kill",
    )
    wait_settled(fault_engine, [ing], 180)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=COMPARE)
    assert (o.persisted, o.dead) == (BATCH, 0)
    with fault_engine.connect() as conn:
        not_claimed = conn.execute(
            sa.text("SELECT count(*) FROM raw_records WHERE id = ANY(:ids) AND enqueued_at <= :t"),
            {"ids": unsettled, "t": killed_at},
        ).scalar_one()
    assert not_claimed == 0, f"{not_claimed} records unsettled at the kill settled without being claimed again"
    status = api.get(f"ingestions/{ing}").json()
    assert status["status"] == "finished" and status["counts"]["persisted"] == BATCH, status
    report(
        "all processes SIGKILL + broker flushed",
        o,
        settle,
        unsettled_at_kill=len(unsettled),
        broker_keys_or_messages_flushed=flushed,
        swept=swept(worker),
    )
