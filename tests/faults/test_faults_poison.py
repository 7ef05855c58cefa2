"""A poison record that always fails, planted by tests/helpers/poison_app.py in the worker only:
it is dead-lettered after its attempts, the rest of its batch lands, nothing loops. No beat
runs (so no outbox sweeper): splitting and the delivery counter alone settle the batch."""

from __future__ import annotations

import math

import pytest

from tests.helpers.faultlib import (
    Clock,
    assert_exactly_once,
    log_count,
    report,
    sweeper_runs,
    swept,
    wait_settled,
)
from tests.helpers.payloads import student
from tests.helpers.procs import ROOT, wait_until

pytestmark = pytest.mark.slow

BATCH = 1_000
CHUNK = 64
MAX_DELIVERIES = 2
KILLED = "exited with 'signal 9 (SIGKILL)'"


def poisoned_batch(prefix: str) -> tuple[list[dict], str]:
    batch = [student(f"{prefix}-{i:05d}", name=f"Student {i}", grade_level=1 + i % 16) for i in range(BATCH)]
    poison = f"{prefix}-POISON"
    batch[BATCH // 2 + 7] = student(poison, name="poison")
    return batch, poison


def run_poison(make_stack, fault_engine, registry, unique, mode: str) -> tuple:
    stack = make_stack(
        PYTHONPATH=str(ROOT),
        ETL_TEST_POISON=mode,
        ETL_CHUNK_SIZE=str(CHUNK),
        ETL_MAX_DELIVERIES=str(MAX_DELIVERIES),
    )
    api = stack.up(worker_app="tests.helpers.poison_app:celery", beat=False)
    worker = stack.procs[0]
    clock = Clock()
    batch, poison = poisoned_batch(unique)
    ing = api.submit("students/batch", batch)["ingestion_id"]

    wait_settled(fault_engine, [ing], 150)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=("name", "grade_level"))
    assert (o.persisted, o.dead) == (BATCH - 1, 1), o
    with fault_engine.connect() as conn:
        dead = conn.exec_driver_sql(
            "SELECT natural_key, error_type, error FROM dead_letters WHERE ingestion_id = %(i)s", {"i": ing}
        ).one()
    assert dead.natural_key == poison and dead.error_type == "internal", dead
    # No loop: the broker holds nothing more of the pipeline once the batch settled, and nothing
    # else could send it again.
    wait_until(lambda: stack.pipeline_messages() == 0, 30, what="the broker to empty")
    assert (sweeper_runs(worker), swept(worker)) == (0, 0)
    return stack, worker, o, settle, dead


def test_a_poison_record_that_raises_is_isolated_and_dead_lettered(make_stack, fault_engine, registry, unique):
    _stack, worker, o, settle, dead = run_poison(make_stack, fault_engine, registry, unique, "raise")
    assert "poisoned record" in dead.error
    splits = log_count(worker, "splitting a chunk")
    assert splits <= math.ceil(math.log2(CHUNK)), f"{splits} splits for one poison in a chunk of {CHUNK}"
    report("poison record (raises in enrich)", o, settle, chunk_splits=splits, error=dead.error[:60])


def test_a_poison_record_that_kills_its_worker_is_dead_lettered_after_its_deliveries(
    make_stack, fault_engine, registry, unique
):
    """Each delivery kills the pool child (task_reject_on_worker_lost puts the message back);
    the delivery counter alone stops it after ETL_MAX_DELIVERIES (no sweeper runs), the chunk
    is bisected down to the poison, and the poison alone is dead-lettered as `internal`: each
    chunk on the way down killed exactly ETL_MAX_DELIVERIES children."""
    _stack, worker, o, settle, dead = run_poison(make_stack, fault_engine, registry, unique, "kill")
    assert "delivered more than" in dead.error
    kills, splits = log_count(worker, KILLED), log_count(worker, "splitting a chunk")
    assert splits == int(math.log2(CHUNK)), f"{splits} splits for one poison in a chunk of {CHUNK}"
    assert kills == MAX_DELIVERIES * (splits + 1), f"{kills} children killed"
    report(
        "poison record (kills its pool child)",
        o,
        settle,
        children_killed=kills,
        chunk_splits=splits,
        error=dead.error[:60],
    )


def test_the_last_copy_of_a_key_wins_even_when_the_first_copys_chunk_is_delayed(
    make_stack, fault_engine, registry, unique
):
    """Copies of a key in different chunks of one batch: the chunk holding the first copies also
    holds a poison, so it is bisected and persisted after the chunk holding the last copies. The
    last copies must still win."""
    stack = make_stack(PYTHONPATH=str(ROOT), ETL_CHUNK_SIZE=str(CHUNK))
    api = stack.up(worker_app="tests.helpers.poison_app:celery", beat=False)
    firsts = [student(f"{unique}-{i:05d}", name=f"first {i}", grade_level=1) for i in range(CHUNK - 1)]
    lasts = [{**f, "name": f"last {i}", "grade_level": 2} for i, f in enumerate(firsts)]
    ing = api.submit("students/batch", [*firsts, student(f"{unique}-POISON"), *lasts])["ingestion_id"]
    wait_settled(fault_engine, [ing], 60)
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=("name", "grade_level"))
    assert (o.persisted, o.dead) == (2 * (CHUNK - 1), 1)
