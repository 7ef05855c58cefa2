"""The broker restarted (stopped, then started again; not flushed) three times while chains run.

The workers are the Procfile's own (remote control and gossip on, as in production), prefetch 4
messages a child, and hold countdown messages of sessions waiting for their parents, so every
restart finds them holding delivered, unacknowledged messages. Redis keeps nothing on disk: what
it held is gone at each restart, and the outbox sweeper re-drives those records. RabbitMQ keeps
its durable queues: the messages its consumers had not acknowledged are delivered again.

Every worker process stays up (the same pids from start to end: none died, none needed a
restart), every valid POST answers 202 throughout, and every record ends exactly once. What the
API stored while the broker was down is sent by the relay or the sweeper once it is back (the
report counts both)."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter

import pytest
import requests

from tests.helpers.faultlib import (
    Clock,
    assert_exactly_once,
    outcome,
    relayed,
    report,
    swept,
    unpublished,
    wait_settled,
)
from tests.helpers.payloads import session, student, tutor
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.slow

RESTARTS = 3
DOWN_SECONDS = 3
RECEIVED = re.compile(r"Task (etl\.[\w.-]+)\[([0-9a-f-]{36})\] received")


class Feed(threading.Thread):
    """Submits batches until stopped: students, and sessions whose tutor and students come only at
    the end (they wait, re-sent with a countdown). Every answer must be a 202."""

    def __init__(self, api, unique: str) -> None:
        super().__init__(name="feed", daemon=True)
        self.api, self.unique = api, unique
        self.halt = threading.Event()
        self.rounds = 0
        self.failures: list[str] = []
        self.slowest = 0.0

    def post(self, path: str, payload) -> None:
        began = time.monotonic()
        try:
            r = self.api.post(path, payload)
        except requests.RequestException as exc:
            self.failures.append(f"POST {path}: {exc!r}")
            return
        self.slowest = max(self.slowest, time.monotonic() - began)
        if r.status_code != 202:
            self.failures.append(f"POST {path}: {r.status_code} {r.text[:300]}")

    def run(self) -> None:
        while not self.halt.is_set():
            n, u = self.rounds, self.unique
            self.post("students/batch", [student(f"{u}-{n}-{i}", grade_level=1 + i % 16) for i in range(300)])
            self.post("sessions/batch", [session(f"{u}-s{n}-{i}", f"{u}-t", f"{u}-late-{i}") for i in range(40)])
            self.post("students", student(f"{u}-single-{n}"))
            self.rounds += 1
            self.halt.wait(0.3)

    def stop(self) -> None:
        self.halt.set()
        self.join(60)


def redeliveries(*logs: str) -> int:
    """Task messages a worker received more than once (same task id): broker redeliveries."""
    seen = Counter(m.group(2) for log in logs for m in RECEIVED.finditer(log))
    return sum(n - 1 for n in seen.values() if n > 1)


def test_the_broker_restarted_three_times_while_chains_run(make_stack, broker, fault_engine, registry, unique):
    stack = make_stack(
        CELERY_PREFETCH_MULTIPLIER="4",
        ETL_PARENT_WAIT_SECONDS="600",
        WORKER_CONCURRENCY="2",
        LOOKUP_CONCURRENCY="1",
        DEAD_LETTER_CONCURRENCY="1",
    )
    workers = [stack.procfile(name) for name in ("worker", "lookups", "dead_letter")]
    for proc in workers:
        wait_until(lambda p=proc: " ready." in p.log() or not p.alive(), 60, what=f"{proc.name} to be ready")
        assert proc.alive(), proc.log()
    stack.beat()
    web = stack.web()
    api = stack.api(timeout=20)  # "no hang": a request that takes longer is a failure
    pids = {p.name: (p.pid, tuple(p.children())) for p in workers}
    clock = Clock()
    feed = Feed(api, unique)
    feed.start()
    recoveries: list[float] = []
    held_at_stop: list[int] = []
    try:
        for _ in range(RESTARTS):
            held = wait_until(
                lambda: stack.pipeline_messages(queued=False), 60, 0.1, what="the workers to hold messages"
            )
            held_at_stop.append(held)
            broker.stop(graceful=True)
            time.sleep(DOWN_SECONDS)
            broker.start()
            started = time.monotonic()
            before = outcome(fault_engine, stack.answers.ingestion_ids).persisted
            wait_until(
                lambda b=before: outcome(fault_engine, stack.answers.ingestion_ids).persisted > b,
                120,
                0.2,
                what="records to be persisted again after the broker restart",
            )
            recoveries.append(round(time.monotonic() - started, 1))
            time.sleep(3)  # let the workers take messages again before the next restart
    finally:
        feed.stop()
    assert not feed.failures, feed.failures[:5]
    assert feed.rounds > 0
    # The parents of the waiting sessions, last.
    api.submit("tutors", tutor(f"{unique}-t"))
    api.submit("students/batch", [student(f"{unique}-late-{i}") for i in range(40)])

    wait_settled(fault_engine, stack.answers.ingestion_ids, 300)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers)
    assert o.persisted == o.accepted and o.dead == 0, o
    for proc in workers:
        assert proc.alive(), f"{proc.name} exited:\n{proc.log()[-3000:]}"
        assert "Unrecoverable error" not in proc.log(), proc.log()[-3000:]
        assert proc.pid == pids[proc.name][0]
    assert set(stack.answers.statuses) == {202}, stack.answers.statuses
    report(
        f"broker restarted {RESTARTS}x for {DOWN_SECONDS}s under load",
        o,
        settle,
        held_unacked_at_each_stop=held_at_stop,
        seconds_to_persist_again=recoveries,
        redelivered=redeliveries(*(p.log() for p in workers)),
        stored_while_broker_down=unpublished(web),
        sent_by_relay=relayed(web),
        sent_by_sweeper=swept(workers[0]),
        slowest_post_s=round(feed.slowest, 2),
        processes_restarted=0,
    )
