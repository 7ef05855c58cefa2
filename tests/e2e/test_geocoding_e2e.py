"""Tutors geocoded in enrich, end to end: gunicorn and a real `celery worker` whose geocoder is an
Open-Meteo-like server started here on 127.0.0.1 (it counts the requests per name); the worker is
restarted with the geocoder's settings of each test."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.helpers.geocoder_server import Reply, answer_for, dead_letters, places, stored, submit
from tests.helpers.payloads import student, tutor
from tests.helpers.procs import Stack, procfile_queues, running_stack, wait_until
from tests.helpers.support import redis_db

pytestmark = pytest.mark.slow

E2E_REDIS = redis_db(15)
E2E_ENV = {"ETL_RETRY_BACKOFF_SECONDS": "1", "ETL_RETRY_BACKOFF_MAX_SECONDS": "2"}


@pytest.fixture(scope="module")
def stack(database_url, tmp_path_factory) -> Iterator[Stack]:
    """gunicorn only: each test starts its workers (the e2e conftest's ``worker``)."""
    with running_stack(database_url, E2E_REDIS, tmp_path_factory.mktemp("logs"), **E2E_ENV) as s:
        s.web()
        yield s


def test_tutors_land_geocoded_with_one_request_per_distinct_location(api, worker, server, unique, sql):
    server.reply = answer_for(unique)
    worker(ETL_GEOCODER_URL=server.url)
    berlin, lima, atlantis = places(unique)
    before = server.total

    ids = submit(api, unique, "a", (berlin, lima, atlantis))
    rows = stored(sql, ids)
    assert len(rows) == 30
    expected = {
        berlin: ("Germany", "DE", "Europe/Berlin", 52.52, 13.41, "found", True),
        lima: ("Peru", "PE", "America/Lima", -12.04, -77.03, "found", True),
        atlantis: (None, None, None, None, None, "not_found", True),
    }
    for i, tutor_id in enumerate(ids):
        assert rows[tutor_id] == expected[(berlin, lima, atlantis)[i % 3]], tutor_id
    names = {berlin.casefold(), lima.casefold(), atlantis.casefold()}
    assert {name: server.requests[name] for name in names} == dict.fromkeys(names, 1)
    assert server.total - before == 3

    # The same locations again (spelled differently): all from the cache, not one more request.
    again = submit(api, unique, "b", (berlin.upper(), f"  {lima} ", atlantis))
    rows = stored(sql, again)
    assert [rows[t][5] for t in again[:3]] == ["found", "found", "not_found"]
    assert rows[again[0]][:5] == expected[berlin][:5]
    assert server.total - before == 3
    assert dead_letters(sql, ids + again) == 0


def test_a_geocoder_answering_500_leaves_tutors_persisted_failed_after_its_retries(api, worker, server, unique, sql):
    server.reply = lambda name: ("json", (500, {"error": "boom"}, {}))
    worker(ETL_GEOCODER_URL=server.url, ETL_GEOCODER_MAX_RETRIES="1", ETL_GEOCODER_BACKOFF_SECONDS="0.2")
    berlin, lima, atlantis = places(unique)
    names = {berlin.casefold(), lima.casefold(), atlantis.casefold()}

    ids = submit(api, unique, "a", (berlin, lima, atlantis), count=9)
    rows = stored(sql, ids)
    assert set(rows.values()) == {(None, None, None, None, None, "failed", True)}
    assert len(rows) == 9
    asked = sum(server.requests[name] for name in names)
    # One call a round (the first fails, the rest of the chunk is deferred), two rounds (the
    # budget of 1 retry): a failing provider holds the worker for one call a round.
    assert asked == 2, dict(server.requests)
    assert dead_letters(sql, ids) == 0


def test_without_a_geocoder_url_tutors_are_skipped_without_a_request(api, worker, server, unique, sql):
    server.reply = answer_for(unique)
    worker()
    before = server.total
    ids = submit(api, unique, "a", places(unique), count=6)
    rows = stored(sql, ids)
    assert set(rows.values()) == {(None, None, None, None, None, "skipped", False)}
    assert len(rows) == 6
    assert server.total == before
    assert dead_letters(sql, ids) == 0


def test_a_429_is_waited_out_with_its_retry_after_and_the_tutors_land_found(api, worker, server, unique, sql):
    """The geocoder answers 429 with ``Retry-After: 1`` twice per name, then answers. The chunk is
    retried after the wait (throttling: no retry budget spent, no breaker trip) and lands found.
    With a 2 s outbox lease the retrying enrich has renewed the chunk's lease in its own
    transaction before it extends it for the next retry: it ends that transaction first (it used
    to wait for its own row locks, for ever)."""
    berlin, lima, _ = places(unique)
    answer = answer_for(unique)
    seen: dict[str, int] = {}

    def reply(name: str) -> Reply:
        seen[name] = seen.get(name, 0) + 1
        if seen[name] <= 2:
            return "json", (429, {"error": "slow down"}, {"Retry-After": "1"})
        return answer(name)

    server.reply = reply
    worker(ETL_GEOCODER_URL=server.url, ETL_GEOCODER_MAX_RETRIES="0", ETL_OUTBOX_LEASE_SECONDS="2")
    ids = submit(api, unique, "t", (berlin, lima), count=6)
    rows = stored(sql, ids)
    assert {row[1] for row in rows.values()} == {"DE", "PE"}
    assert {row[5] for row in rows.values()} == {"found"}
    assert (server.requests[berlin.casefold()], server.requests[lima.casefold()]) == (3, 3)
    assert dead_letters(sql, ids) == 0


def test_a_hanging_geocoder_holds_only_the_lookups_worker_while_other_records_land(api, worker, server, unique, sql):
    """The Procfile's split: ``worker`` on etl and jobs, ``lookups`` on the lookups queue, one
    process each. While the geocoder holds the tutors' calls, students still land through the
    pipeline worker; the tutors land once it answers. (With enrich on the etl queue the students
    wait behind the held call.)"""
    berlin, lima, _ = places(unique)
    answer, release = answer_for(unique), threading.Event()

    def held(name: str) -> Reply:
        release.wait(60)
        return answer(name)

    server.reply = held
    env = {"ETL_GEOCODER_URL": server.url, "ETL_GEOCODER_TIMEOUT_SECONDS": "90"}
    worker(queues=procfile_queues("worker"), concurrency=1, **env)
    worker(name="lookups", queues=procfile_queues("lookups"), concurrency=1, **env)
    try:
        tutors = [tutor(f"{unique}-held-{i}", location=(berlin, lima)[i % 2]) for i in range(4)]
        r = api.post("tutors/batch", tutors)
        assert r.status_code == 202, r.text
        held_tutors = r.json()["ingestion_id"]
        wait_until(lambda: server.in_flight > 0, 60, what="the geocoder to hold a tutor's call")

        r = api.post("students/batch", [student(f"{unique}-free-{i}") for i in range(20)])
        assert r.status_code == 202, r.text
        landed = api.wait_finished(r.json()["ingestion_id"], timeout=45)
        assert landed["counts"]["persisted"] == 20, landed
        assert server.in_flight > 0  # still held
        assert api.get(f"ingestions/{held_tutors}").json()["counts"]["persisted"] == 0
    finally:
        release.set()
    assert api.wait_finished(held_tutors, timeout=60)["counts"]["persisted"] == 4
    rows = stored(sql, [t["tutor_id"] for t in tutors])
    assert {row[5] for row in rows.values()} == {"found"}
