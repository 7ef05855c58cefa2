"""PostgreSQL and the broker stopped under load (the private servers of tests/faults/conftest.py)."""

from __future__ import annotations

import re
import time

import pytest
import requests

from tests.helpers.faultlib import Clock, assert_exactly_once, outcome, relayed, report, swept, wait_settled
from tests.helpers.payloads import student
from tests.helpers.procs import wait_until
from tests.helpers.services import wait_for_postgres

pytestmark = pytest.mark.slow

COMPARE = ("name", "grade_level")
DB_OUTAGE_SECONDS = 30
CACHE_OUTAGE_SECONDS = 30
# A pipeline task's "retries exhausted" log record (the error in it may span lines, up to the
# next record: a line that starts with a date, or with "[" in Celery's own layout).
NEXT_RECORD = r"\n(?:\[|\d{4}-\d\d-\d\d)"
GAVE_UP = re.compile(rf"\betl\.(?:validate|enrich|persist): (?:(?!{NEXT_RECORD}).)*?retries exhausted", re.DOTALL)
RETRIED = re.compile(rf"\betl\.(?:validate|enrich|persist): (?:(?!{NEXT_RECORD}).)*?; retry \d+/", re.DOTALL)


def students(prefix: str, n: int) -> list[dict]:
    return [student(f"{prefix}-{i:05d}", name=f"Student {i}", grade_level=1 + i % 16) for i in range(n)]


def test_postgres_stopped_for_30_seconds_while_a_batch_persists(make_stack, private_pg, fault_engine, registry, unique):
    """Tasks retry with backoff through the outage (the budget outlasts it), then persist."""
    n = 10_000
    stack = make_stack(ETL_TRANSIENT_MAX_RETRIES="40")  # backoff 1 s doubling to at most 4 s
    api = stack.up()
    worker = stack.procs[0]
    clock = Clock()
    ing = api.submit("students/batch", students(unique, n))["ingestion_id"]
    wait_until(lambda: outcome(fault_engine, [ing]).persisted > 0, 60, 0.05, what="persisting to start")
    at_stop = outcome(fault_engine, [ing]).persisted
    stopped = time.monotonic()
    try:
        private_pg.stop()
        wait_until(lambda: RETRIED.search(worker.log()), 30, what="a pipeline task to retry")
        # The API cannot store anything now: it must say so, quickly, and never answer 202.
        began = time.monotonic()
        try:
            r = api.post("students", student(f"{unique}-during-outage"), timeout=20)
        except requests.Timeout:
            raise AssertionError("a POST hung while PostgreSQL was down") from None
        post_during_outage = (r.status_code, round(time.monotonic() - began, 2))
        assert r.status_code == 503, (r.status_code, r.text[:500])
        assert r.json()["error"] == "database_unavailable", r.text[:500]
        time.sleep(max(0.0, DB_OUTAGE_SECONDS - (time.monotonic() - stopped)))  # the outage itself
    finally:
        private_pg.start()
    outage = time.monotonic() - stopped
    wait_for_postgres(private_pg.admin_url)

    wait_settled(fault_engine, [ing], 120)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=COMPARE)
    assert (o.persisted, o.dead) == (n, 0)  # and the POST answered 503 stored nothing
    assert at_stop < n, "the outage came after the batch was done"
    report(
        f"PostgreSQL down {outage:.0f}s mid-persist",
        o,
        settle,
        persisted_at_stop=at_stop,
        post_during_outage=post_during_outage,
        pipeline_retries=len(RETRIED.findall(worker.log())),
        swept=swept(worker),
    )


def test_postgres_stopped_longer_than_the_retry_budget(make_stack, private_pg, fault_engine, registry, unique):
    """With two quick retries, every task gives up while PostgreSQL is down: the records stay
    `received` (not dead, not lost) and the sweeper re-drives them once it is back."""
    n = 5_000
    stack = make_stack(ETL_TRANSIENT_MAX_RETRIES="2", ETL_RETRY_BACKOFF_MAX_SECONDS="2")
    api = stack.up()
    worker = stack.procs[0]
    clock = Clock()
    ing = api.submit("students/batch", students(unique, n))["ingestion_id"]
    wait_until(lambda: worker.log().count("] succeeded in") >= 10, 60, 0.05, what="the batch to be under way")
    stopped = time.monotonic()
    try:
        private_pg.stop()
        # Every chain runs into the outage, retries twice and gives up: the broker empties.
        wait_until(lambda: GAVE_UP.search(worker.log()), 60, what="a task to exhaust its retries")
        wait_until(lambda: stack.pipeline_messages() == 0, 60, what="every chain to give up")
        gave_up = len(GAVE_UP.findall(worker.log()))
    finally:
        private_pg.start()
    outage = time.monotonic() - stopped
    wait_for_postgres(private_pg.admin_url)
    right_after = outcome(fault_engine, [ing])
    assert right_after.received > 0 and right_after.dead == 0, right_after
    assert gave_up > 0

    wait_settled(fault_engine, [ing], 120)
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=COMPARE)
    assert (o.persisted, o.dead) == (n, 0)
    report(
        f"PostgreSQL down {outage:.0f}s > retry budget",
        o,
        settle,
        chains_gave_up=gave_up,
        received_when_db_returned=right_after.received,
        swept=swept(worker),
    )


@pytest.mark.parametrize("web_dies", [False, True], ids=["web-lives", "web-killed"])
def test_the_broker_down_while_the_api_takes_records(make_stack, broker, fault_engine, registry, unique, web_dies):
    """Paused (SIGSTOP: connections hang) and then stopped: every valid POST answers 202 within
    the request timeout, as the outbox holds what the broker cannot take (on Redis the broker is
    the cache too, and it is down as well). Once the broker is back, what never went out is sent
    with nobody touching anything: by the web process's relay or the outbox sweeper while the
    web process lives (the test counts which sent how many); by the sweeper alone when the web
    process was SIGKILLed before the broker returned."""
    stack = make_stack()
    api = stack.up()
    web = next(p for p in stack.procs if p.name == "web")
    api.timeout = 20  # "no hang": a request that takes longer fails the test
    clock = Clock()
    timings: list[tuple[str, int, float]] = []

    def post(phase: str, path: str, payload) -> None:
        began = time.monotonic()
        try:
            r = api.post(path, payload)
        except requests.Timeout:
            raise AssertionError(f"{phase}: POST {path} hung past {api.timeout}s") from None
        timings.append((phase, r.status_code, time.monotonic() - began))
        assert r.status_code == 202, (phase, r.status_code, r.text[:500])

    try:
        broker.pause()
        for i in range(3):
            post("paused", "students/batch", students(f"{unique}-p{i}", 500))
            post("paused", "students", student(f"{unique}-p-single-{i}"))
        broker.stop()
        for i in range(3):
            post("stopped", "students/batch", students(f"{unique}-s{i}", 500))
            post("stopped", "students", student(f"{unique}-s-single-{i}"))
        down = outcome(fault_engine, stack.answers.ingestion_ids)
        assert down.persisted == 0 and down.received == down.accepted == 3 * 2 * 501, down
        if web_dies:
            web.kill()
    finally:
        broker.start()  # Redis: empty, whatever was queued before is gone; RabbitMQ: kept
    back = clock()

    wait_settled(fault_engine, stack.answers.ingestion_ids, 120)
    settle = clock()
    # Every record a 202 counted lands, once.
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=COMPARE)
    assert o.persisted == o.accepted == 3 * 2 * 501 and o.dead == 0
    worker = stack.procs[0]
    by_relay, by_sweeper = relayed(web), swept(worker)
    if web_dies:
        assert by_relay == 0 and by_sweeper >= o.accepted, (by_relay, by_sweeper)
    else:
        # each record was claimed by one of them (a claim is a row lock and a lease)
        assert by_relay + by_sweeper >= o.accepted, (by_relay, by_sweeper)
    report(
        "broker paused+stopped during POSTs" + (", web SIGKILLed" if web_dies else ""),
        o,
        settle,
        requests=len(timings),
        answered_202=sum(1 for t in timings if t[1] == 202),
        max_request_s=round(max(t[2] for t in timings), 2),
        settle_after_broker_back_s=round(settle - back, 1),
        sent_by_relay=by_relay,
        sent_by_sweeper=by_sweeper,
    )


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_the_cache_redis_down_while_a_rabbitmq_broker_takes_records(
    make_stack, broker, private_redis, fault_engine, registry, unique
):
    """With RabbitMQ the broker, Redis is the cache only (the stash of validated values, metrics,
    rate limits, queue heads). Stopped for at least CACHE_OUTAGE_SECONDS while the API takes
    records: every valid POST answers 202 within the request timeout, /ready says the cache is
    down (and stays 200: records are still taken), and every record lands while it is down
    (a chunk's values travel in the messages instead), once, none a dead letter."""
    stack = make_stack()
    api = stack.up()
    api.timeout = 20
    clock = Clock()
    answers, ready = [], None
    try:
        private_redis.stop()
        for i in range(3):
            answers.append(api.post("students/batch", students(f"{unique}-c{i}", 500)).status_code)
            answers.append(api.post("students", student(f"{unique}-c-single-{i}")).status_code)
        ready = requests.get(f"{api.base}/ready", timeout=10)
        wait_settled(fault_engine, stack.answers.ingestion_ids, 120, what="with the cache down")
        settled_down = clock()
        # and after CACHE_OUTAGE_SECONDS, a second round, settled while it is still down
        time.sleep(max(0.0, CACHE_OUTAGE_SECONDS - settled_down))
        answers.append(api.post("students/batch", students(f"{unique}-late", 500)).status_code)
        wait_settled(fault_engine, stack.answers.ingestion_ids, 120, what="with the cache down (second round)")
        during = outcome(fault_engine, stack.answers.ingestion_ids)
    finally:
        private_redis.start()
    assert answers == [202] * 7, answers
    assert ready is not None and ready.status_code == 200, ready
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "cache": "unavailable: ConnectionError"}
    assert during.persisted == during.accepted == 3 * 501 + 500, during
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=COMPARE)
    assert o.persisted == o.accepted == 3 * 501 + 500 and o.dead == 0, o
    report(
        "cache Redis down (RabbitMQ broker)",
        o,
        clock(),
        first_round_settled_s=round(settled_down, 1),
        down_s=round(clock(), 1),
        ready_while_down=(ready.status_code, ready.json().get("checks")),
    )
