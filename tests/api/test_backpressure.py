"""Backpressure (etl_app.ingest.backlog): past a bound on the records waiting to settle, or on
how long the oldest has waited, submits and uploads are 429 ``backlog_full`` with Retry-After
from the recent drain rate; /ready, /metrics and the Overview page say why. Real PostgreSQL and
Redis, Flask's test client; the end-to-end test with workers is tests/e2e/test_backpressure_e2e.py.

This database is shared with the other tests, some of which leave records unsettled on purpose:
each test sets its record bound just above what it finds there, and settles what it stored."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa

from etl_app.clock import utcnow
from etl_app.ingest import backlog

from tests.helpers.dead_letters import store
from tests.helpers.payloads import student
from tests.helpers.support import API_KEY, metric_samples
from tests.helpers.ui import sign_in

DEADLINE_SECONDS = 30


def unsettled(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(sa.text("SELECT count(*) FROM raw_records WHERE status = 'received'"))


@pytest.fixture
def settle_afterwards(engine) -> Iterator[list[int]]:
    """Raw record ids a test stored: marked persisted at its end (no other test finds them waiting)."""
    ids: list[int] = []
    yield ids
    settle(engine, ids)


def settle(engine, ids: list[int]) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE raw_records SET status = 'persisted', updated_at = now() WHERE id = ANY(:ids)"),
            {"ids": ids},
        )


def stored_keys(engine, keys: list[str]) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                sa.text("SELECT natural_key FROM raw_records WHERE record_type = 'students' AND natural_key = ANY(:k)"),
                {"k": keys},
            )
        )


def wait_until(check, what: str):
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {DEADLINE_SECONDS} s: {what}"
        time.sleep(0.2)


@pytest.fixture
def full_app(make_app, engine, settle_afterwards, unique):
    """An app whose record bound is one above the records waiting now, and two more records waiting."""
    bound = unsettled(engine) + 1
    app = make_app(backlog_max_records=bound, backlog_max_age_seconds=0)
    settle_afterwards += store(engine, "students", [student(f"{unique}-a"), student(f"{unique}-b")]).ids
    return app


def test_past_the_record_bound_every_submit_is_429_with_retry_after_and_nothing_is_stored(
    full_app, auth, engine, unique
):
    client = full_app.test_client()
    one = client.post("/api/v1/students", json=student(f"{unique}-one"), headers=auth)
    assert one.status_code == 429, one.get_json()
    assert one.headers["Retry-After"] == str(backlog.DEFAULT_RETRY_SECONDS)  # nothing settled in the last minute
    body = one.get_json()
    assert body["error"] == "backlog_full"
    assert "ETL_BACKLOG_MAX_RECORDS" in body["message"] and "retry in 30 s" in body["message"]
    bound = full_app.extensions["etl"].settings.backlog_max_records
    assert body["bound"] == {"records": bound, "age_seconds": 0}
    assert body["backlog"]["records"] > bound and body["backlog"]["reasons"] == ["records"]
    assert body["backlog"]["settled_per_second"] == 0
    assert body["retry_after"] == 30

    batch = client.post("/api/v1/students/batch", json=[student(f"{unique}-batch")], headers=auth)
    ndjson = client.post(
        "/api/v1/students/batch",
        data=b'{"student_id": "x"}\n',
        headers={**auth, "Content-Type": "application/x-ndjson"},
    )
    upload = client.post(
        "/api/v1/students/upload",
        data={"file": (io.BytesIO(b"student_id,name\ns-up,Ann\n"), "students.csv")},
        headers=auth,
        content_type="multipart/form-data",
    )
    for answer in (batch, ndjson, upload):
        assert answer.status_code == 429 and answer.get_json()["error"] == "backlog_full"
        assert answer.headers["Retry-After"] == "30"
    assert stored_keys(engine, [f"{unique}-one", f"{unique}-batch"]) == []
    # what is not a submit still answers
    assert client.get("/api/v1/record-types", headers=auth).status_code == 200
    assert client.post("/api/v1/nope", json={}, headers=auth).status_code == 404


def test_retry_after_is_the_excess_over_the_recent_drain_rate(
    make_app, engine, settle_afterwards, unique, auth, api_redis_url, broker_prefix
):
    cache = redis.Redis.from_url(api_redis_url)
    now = time.time()
    for ago in range(1, 61):  # 600 records settled in the last minute: 10 a second
        backlog.count_settled(cache, broker_prefix, 10, now=now - ago)
    bound = unsettled(engine) + 1
    app = make_app(backlog_max_records=bound, backlog_max_age_seconds=0)
    settle_afterwards += store(engine, "students", [student(f"{unique}-{i}") for i in range(40)]).ids
    answer = app.test_client().post("/api/v1/students", json=student(f"{unique}-late"), headers=auth)
    assert answer.status_code == 429
    body = answer.get_json()
    rate, records = body["backlog"]["settled_per_second"], body["backlog"]["records"]
    assert 9 <= rate <= 10  # the current second is not in the window yet
    expected = min(300, max(1, math.ceil((records - bound) / rate)))
    assert body["retry_after"] == expected and answer.headers["Retry-After"] == str(expected)
    assert 4 <= expected <= 5  # 40 records over the bound, at 10 a second


def test_once_settled_below_the_bound_submits_are_taken_again(full_app, auth, engine, unique, settle_afterwards):
    client = full_app.test_client()
    assert client.post("/api/v1/students", json=student(f"{unique}-early"), headers=auth).status_code == 429
    settle(engine, settle_afterwards)
    wait_until(lambda: not client.get("/ready").get_json()["backlog"]["full"], "the backlog read again, not full")
    taken = client.post("/api/v1/students", json=student(f"{unique}-now"), headers=auth)
    assert taken.status_code == 202, taken.get_json()
    settle_afterwards += [r[0] for r in _ids(engine, f"{unique}-now")]
    assert stored_keys(engine, [f"{unique}-early", f"{unique}-now"]) == [f"{unique}-now"]


def test_after_a_while_without_requests_the_first_answer_reads_the_backlog_again(full_app, engine, settle_afterwards):
    """A web process that served nothing for a while does not answer its next request from its
    old reading: that request waits for a new one."""
    client = full_app.test_client()
    assert client.get("/ready").get_json()["backlog"]["full"] is True
    settle(engine, settle_afterwards)
    reader = full_app.extensions["etl"].backlog
    reader._due = time.monotonic() - backlog.OVERDUE_SECONDS - 1  # as if nothing came for that long
    assert client.get("/ready").get_json()["backlog"]["full"] is False


def _ids(engine, key: str):
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT id FROM raw_records WHERE natural_key = :k"), {"k": key}).all()


def test_a_record_waiting_past_the_age_bound_fills_the_backlog(make_app, engine, settle_afterwards, unique, auth):
    app = make_app(backlog_max_records=0, backlog_max_age_seconds=600)
    settle_afterwards += store(
        engine, "students", [student(f"{unique}-old")], received_at=utcnow() - timedelta(hours=1)
    ).ids
    answer = app.test_client().post("/api/v1/students", json=student(f"{unique}-new"), headers=auth)
    assert answer.status_code == 429
    body = answer.get_json()
    assert body["backlog"]["reasons"] == ["age"] and body["backlog"]["oldest_seconds"] >= 3600
    assert body["bound"] == {"records": 0, "age_seconds": 600}
    assert "ETL_BACKLOG_MAX_AGE_SECONDS" in body["message"]


def test_ready_says_the_backlog_is_full_and_why_and_stays_ready(full_app):
    answer = full_app.test_client().get("/ready")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "ready"
    state = body["backlog"]
    assert state["full"] is True and state["reasons"] == ["records"] and state["retry_after"] == 30
    assert state["max_records"] == full_app.extensions["etl"].settings.backlog_max_records
    assert "waiting to be processed, over the bound" in state["message"]


def test_ready_with_the_bounds_off_has_no_backlog_and_submits_are_taken(app, auth, engine, unique, settle_afterwards):
    client = app.test_client()
    assert client.get("/ready").get_json()["backlog"] is None
    assert client.post("/api/v1/students", json=student(f"{unique}-off"), headers=auth).status_code == 202
    settle_afterwards += [r[0] for r in _ids(engine, f"{unique}-off")]


def test_metrics_show_the_backlog_full_its_reason_and_retry_after(full_app, auth):
    text = full_app.test_client().get("/metrics", headers=auth).get_data(as_text=True)
    samples = metric_samples(text)
    assert samples[("etl_backlog_full", (("reason", "records"),))] == 1
    assert samples[("etl_backlog_full", (("reason", "age"),))] == 0
    assert samples[("etl_backlog_retry_after_seconds", ())] == 30
    bound = full_app.extensions["etl"].settings.backlog_max_records
    assert samples[("etl_backlog_bound", (("bound", "records"),))] == bound
    assert samples[("etl_backlog_records", ())] > bound
    assert samples[("etl_backlog_settled_per_second", ())] == 0


def test_the_overview_page_says_submits_are_refused_and_why(full_app):
    browser = full_app.test_client()
    assert sign_in(browser, API_KEY).status_code == 302
    page = browser.get("/ui/overview").get_data(as_text=True)
    assert "refusing submits · retry in 30 s" in page
    banner = page.split('id="backlog-full"', 1)[1].split("</p>", 1)[0]
    assert " hidden" not in banner.split(">", 1)[0]
    assert "Submits and uploads are refused with 429" in banner and "over the bound" in banner
    data = browser.get("/ui/api/overview").get_json()
    assert data["backlog"]["full"] is True and data["backpressure"] == "refusing submits · retry in 30 s"


def test_the_overview_page_says_accepting_under_the_bounds(make_app):
    app = make_app(backlog_max_records=10_000_000, backlog_max_age_seconds=0)
    browser = app.test_client()
    assert sign_in(browser, API_KEY).status_code == 302
    page = browser.get("/ui/overview").get_data(as_text=True)
    assert ">accepting<" in page and "bounds: 10,000,000 records" in page
    assert 'id="backlog-full" hidden' in page


@pytest.mark.unit
@pytest.mark.parametrize(
    ("excess", "rate", "seconds"),
    [(100, 10.0, 10), (1, 1000.0, 1), (10**9, 1.0, 300), (5, 0.0, 30), (5, None, 30), (7, 2.0, 4)],
)
def test_retry_after_is_the_excess_over_the_rate_within_1_and_300_s(excess, rate, seconds):
    assert backlog.retry_seconds(excess, rate) == seconds


def test_the_drain_rate_counts_the_last_minute_from_when_settling_began(api_redis_url, broker_prefix):
    cache = redis.Redis.from_url(api_redis_url)
    now = 1_000_000.5
    assert backlog.drain_rate(cache, broker_prefix, now=now) == 0
    for ago in range(1, 21):  # settling began 20 s ago: 5 a second
        backlog.count_settled(cache, broker_prefix, 5, now=now - ago)
    backlog.count_settled(cache, broker_prefix, 1000, now=now)  # this second: not whole yet
    backlog.count_settled(cache, broker_prefix, 1000, now=now - 61)  # out of the window
    assert backlog.drain_rate(cache, broker_prefix, now=now) == 5


def test_a_retry_with_the_key_of_a_request_taken_before_the_backlog_filled_gets_its_answer_again(
    make_app, full_app, auth, engine, unique, settle_afterwards
):
    taken_by = make_app()  # bounds off: the request is taken
    payload = [student(f"{unique}-kept")]
    headers = {**auth, "Idempotency-Key": f"{unique}-k1"}
    first = taken_by.test_client().post("/api/v1/students/batch", json=payload, headers=headers)
    assert first.status_code == 202, first.get_json()
    settle_afterwards += [r[0] for r in _ids(engine, f"{unique}-kept")]
    client = full_app.test_client()  # the backlog is full now
    again = client.post("/api/v1/students/batch", json=payload, headers=headers)
    assert again.status_code == 202 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    # a new key, or none, is refused; the same key with another body is the key reused
    fresh = client.post("/api/v1/students/batch", json=payload, headers={**auth, "Idempotency-Key": f"{unique}-k2"})
    assert fresh.status_code == 429 and fresh.get_json()["error"] == "backlog_full"
    assert client.post("/api/v1/students/batch", json=payload, headers=auth).status_code == 429
    other = client.post("/api/v1/students/batch", json=[student(f"{unique}-other")], headers=headers)
    assert other.status_code == 422 and other.get_json()["error"] == "idempotency_key_reused"
    assert stored_keys(engine, [f"{unique}-kept", f"{unique}-other"]) == [f"{unique}-kept"]
