"""Process kills mid-batch: a pool child, the whole worker, every process and the broker's data."""

from __future__ import annotations

import os
import signal

import pytest

from faultlib import Clock, assert_exactly_once, log_count, outcome, pipeline_messages, report, swept, wait_settled
from payloads import student
from procs import wait_until

pytestmark = pytest.mark.slow

BATCH = 20_000
COMPARE = ("name", "grade_level")


def students(prefix: str, n: int) -> list[dict]:
    return [student(f"{prefix}-{i:05d}", name=f"Student {i}", grade_level=1 + i % 16) for i in range(n)]


def wait_persisted(engine, ingestion_id, at_least: int, timeout: float = 120) -> int:
    def enough() -> int | None:
        n = outcome(engine, [ingestion_id]).persisted
        return n if n >= at_least else None

    return wait_until(enough, timeout, 0.1, what=f"{at_least} records persisted")


LOST = "WorkerLostError('Worker exited prematurely: signal 9"


def kill_a_busy_child(worker, engine, ingestion_id, attempts: int = 30) -> int | None:
    """SIGKILL pool children one at a time until the worker reports a task lost with one (a
    child may be between two tasks when it is hit). Returns the records persisted at that
    kill, or None if the batch finished before a busy child was hit."""
    lost_before = log_count(worker, LOST)
    for _ in range(attempts):
        persisted = outcome(engine, [ingestion_id]).persisted
        if persisted >= BATCH:
            return None
        children = wait_until(worker.children, 30, 0.05, what="pool children")
        os.kill(children[0], signal.SIGKILL)
        try:
            wait_until(lambda: log_count(worker, LOST) > lost_before, 0.5, 0.02, what="a lost task")
            return persisted
        except AssertionError:
            continue  # it was idle: try the next one
    raise AssertionError(f"no kill out of {attempts} hit a running task")


def test_a_pool_child_killed_mid_batch(make_stack, fault_engine, registry, unique):
    """acks_late + reject_on_worker_lost: the killed child's task goes back to the queue."""
    stack = make_stack()
    api = stack.up()
    worker = stack.procs[0]
    clock = Clock()
    ing = api.submit("students/batch", students(unique, BATCH))["ingestion_id"]

    # Chains interleave: validations come first, then enrichments, then most persists. The
    # first kill hits a validation or an enrichment, the second (if the batch is not done by
    # then) a persist.
    wait_until(lambda: log_count(worker, "] succeeded in") >= 20, 60, 0.05, what="20 tasks done")
    first = kill_a_busy_child(worker, fault_engine, ing)
    assert first is not None, "the batch was done before the first kill"
    wait_persisted(fault_engine, ing, 1)
    at_kills = [first, kill_a_busy_child(worker, fault_engine, ing)]

    wait_settled(fault_engine, [ing], 180)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, [ing], compare=COMPARE)
    assert (o.persisted, o.dead) == (BATCH, 0)
    assert worker.popen.poll() is None, "the worker's main process survives its children"
    report(
        "pool child SIGKILL mid-batch (x2)",
        o,
        settle,
        persisted_at_kills=at_kills,
        tasks_lost_with_children=log_count(worker, LOST),
    )


def test_the_whole_worker_killed_mid_batch_and_started_again(make_stack, fault_engine, registry, unique):
    """The killed worker's reserved messages stay invisible in Redis until the visibility
    timeout (an hour); the outbox sweeper re-drives their records after the short lease. The
    worker prefetches 4 messages a child here, so that the kill surely strands some."""
    stack = make_stack(CELERY_PREFETCH_MULTIPLIER="4")
    api = stack.up()
    worker = stack.procs[0]
    clock = Clock()
    ing = api.submit("students/batch", students(unique, BATCH))["ingestion_id"]

    wait_persisted(fault_engine, ing, 1)  # persisting has begun (most persists come last)
    worker.kill()  # SIGKILL to the process group: main process and pool children
    at_kill = outcome(fault_engine, [ing]).persisted
    assert at_kill < BATCH, "the kill came after the batch was done"
    stranded = pipeline_messages(stack.redis.client(), stack.prefix, queued=False)
    assert stranded > 0, "the killed worker held no pipeline message"

    restarted = stack.worker(name="worker2")
    wait_settled(fault_engine, [ing], 180)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, [ing], compare=COMPARE)
    assert (o.persisted, o.dead) == (BATCH, 0)
    assert swept(restarted) > 0, "the sweeper should have re-driven the stranded records"
    report(
        "whole worker SIGKILL mid-batch, restarted",
        o,
        settle,
        persisted_at_kill=at_kill,
        messages_stranded_in_unacked=stranded,
        swept=swept(restarted),
    )


def test_every_process_killed_and_the_broker_flushed(make_stack, fault_engine, registry, unique):
    """Web, worker and beat SIGKILLed, every key of the broker gone (FLUSHALL on the private
    Redis): PostgreSQL alone knows what is unsettled, and the sweeper re-drives it."""
    stack = make_stack()
    api = stack.up()
    clock = Clock()
    ing = api.submit("students/batch", students(unique, BATCH))["ingestion_id"]

    wait_persisted(fault_engine, ing, 1)
    stack.kill_all()
    at_kill = outcome(fault_engine, [ing]).persisted
    assert at_kill < BATCH, "the kill came after the batch was done"
    keys_before = stack.redis.client().dbsize()
    stack.redis.client().flushall()

    api = stack.up()
    wait_settled(fault_engine, [ing], 180)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, [ing], compare=COMPARE)
    assert (o.persisted, o.dead) == (BATCH, 0)
    status = api.get(f"ingestions/{ing}").json()
    assert status["status"] == "finished" and status["counts"]["persisted"] == BATCH, status
    report(
        "all processes SIGKILL + broker FLUSHALL",
        o,
        settle,
        persisted_at_kill=at_kill,
        broker_keys_flushed=keys_before,
        swept=swept(stack.procs[0]),
    )
