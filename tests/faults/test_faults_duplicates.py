"""Duplicates (the same batch from several clients at once; a key twice in one batch) and a
child whose parent never comes."""

from __future__ import annotations

import threading

import pytest

from tests.helpers.faultlib import Clock, assert_exactly_once, report, wait_settled
from tests.helpers.payloads import session, student, tutor

pytestmark = pytest.mark.slow

COMPARE = ("name", "grade_level")


def test_the_same_batch_from_several_clients_at_once(make_stack, fault_engine, registry, unique):
    clients, n = 4, 3_000
    stack = make_stack()
    stack.up()
    batch = [student(f"{unique}-{i:05d}", name=f"Student {i}", grade_level=1 + i % 16) for i in range(n)]
    start = threading.Barrier(clients)
    results: list = [None] * clients

    def submit(i: int) -> None:
        api = stack.api()
        start.wait()
        results[i] = api.post("students/batch", batch)

    clock = Clock()
    threads = [threading.Thread(target=submit, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None and r.status_code == 202 for r in results), [getattr(r, "text", r) for r in results]
    ingestions = [r.json()["ingestion_id"] for r in results]

    wait_settled(fault_engine, ingestions, 120)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=COMPARE)
    assert (o.persisted, o.dead) == (clients * n, 0)
    with fault_engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT count(*) FROM students WHERE student_id LIKE %(p)s", {"p": f"{unique}-%"}
        ).scalar_one()
    assert rows == n
    report(f"same batch from {clients} clients at once", o, settle, rows=rows)


def test_a_batch_holding_the_same_key_twice_keeps_the_last(make_stack, fault_engine, registry, unique):
    """Two copies of a key in one chunk: de-duplicated before the upsert, the later one wins."""
    stack = make_stack()
    api = stack.up()
    n = 1_000
    batch = [student(f"{unique}-{i:05d}", name=f"first {i}", grade_level=1) for i in range(n)]
    # Each key again right after itself (same chunk), with other values: those must win.
    batch = [rec for i, first in enumerate(batch) for rec in (first, {**first, "name": f"last {i}", "grade_level": 2})]
    clock = Clock()
    ing = api.submit("students/batch", batch)["ingestion_id"]
    wait_settled(fault_engine, [ing], 60)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=COMPARE)
    assert (o.persisted, o.dead) == (2 * n, 0)
    with fault_engine.connect() as conn:
        kept = dict(
            conn.exec_driver_sql(
                "SELECT name LIKE 'last %%', count(*) FROM students WHERE student_id LIKE %(p)s GROUP BY 1",
                {"p": f"{unique}-%"},
            ).all()
        )
    assert kept == {True: n}, kept
    report("one batch holding every key twice", o, settle, rows=n)


def test_a_child_whose_parent_never_comes(make_stack, fault_engine, registry, unique):
    """Sessions wait for their tutor with backoff, then become `missing_parent` after
    ETL_PARENT_WAIT_SECONDS; their siblings whose parents exist land."""
    stack = make_stack(ETL_PARENT_WAIT_SECONDS="4")
    api = stack.up()
    t, st = f"{unique}-T", f"{unique}-ST"
    clock = Clock()
    parents = [api.submit("tutors", tutor(t))["ingestion_id"], api.submit("students", student(st))["ingestion_id"]]
    wait_settled(fault_engine, parents, 60)
    good = [session(f"{unique}-S{i:03d}", t, st) for i in range(40)]
    orphans = [session(f"{unique}-O{i:03d}", f"{unique}-NOBODY{i % 3}", st) for i in range(10)]
    ing = api.submit("sessions/batch", good + orphans)["ingestion_id"]

    wait_settled(fault_engine, [ing], 90)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers)
    assert o.dead_by_type == {"missing_parent": len(orphans)}, o
    assert o.persisted == len(good) + 2
    with fault_engine.connect() as conn:
        dead = conn.exec_driver_sql(
            "SELECT natural_key, error, attempts FROM dead_letters WHERE ingestion_id = %(i)s", {"i": ing}
        ).all()
    assert all(f"tutors:{unique}-NOBODY" in d.error and d.attempts >= 1 for d in dead), dead
    report("child whose parent never comes (4 s budget)", o, settle, max_attempts=max(d.attempts for d in dead))
