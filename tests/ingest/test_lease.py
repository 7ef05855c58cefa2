"""The outbox lease (etl_app.ingest.claim): what the sweeper re-drives, what a live chain keeps,
and the sent time of the oldest queued message it is measured against. Real PostgreSQL and Redis."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from etl_app.clock import utcnow
from etl_app.ingest import claim
from etl_app.jobs import sweeper
from etl_app.names import PIPELINE_QUEUE
from etl_app.pipeline.messages import SENT_AT_HEADER, chunk_message, oldest_queued_at, pipeline_chain, publish_chunks

from tests.helpers.dead_letters import store
from tests.helpers.payloads import student

LEASE = 20


def set_leases(engine, ids_and_ages: dict[int, float | None]) -> None:
    """Lease of each record began this many seconds ago (negative: in the future; None: unpublished)."""
    with engine.begin() as conn:
        for raw_id, age in ids_and_ages.items():
            conn.execute(
                sa.text(
                    "UPDATE raw_records SET enqueued_at = CASE WHEN CAST(:age AS float8) IS NULL THEN NULL "
                    "ELSE now() - make_interval(secs => :age) END WHERE id = :id"
                ),
                {"id": raw_id, "age": age},
            )


def leases(engine, ids) -> dict[int, float | None]:
    """Seconds since each record's lease began (negative: begins later)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id, extract(epoch FROM now() - enqueued_at) FROM raw_records WHERE id = ANY(:ids)"),
            {"ids": list(ids)},
        ).all()
    return {raw_id: None if age is None else float(age) for raw_id, age in rows}


def claimed_of(engine, ours: list[int], **kwargs) -> set[int]:
    """Which of ``ours`` a sweeper's claim takes (rolled back: other tests' records are untouched)."""
    with engine.connect() as conn:
        got = claim.claim(conn, limit=1_000_000, grace=claim.UNPUBLISHED_GRACE_SECONDS, lease=LEASE, **kwargs)
        conn.rollback()
    return {i for ids in got.values() for i in ids} & set(ours)


@pytest.fixture
def four(engine, unique) -> list[int]:
    """Four received students, leased 100 s, 30 s and 5 s ago, and one never published (60 s old)."""
    ids = store(engine, "students", [student(f"{unique}-{i}") for i in range(4)], utcnow() - timedelta(seconds=60)).ids
    set_leases(engine, dict(zip(ids, (100, 30, 5, None), strict=True)))
    return ids


def test_with_an_empty_queue_a_lease_older_than_the_lease_time_is_due(engine, four):
    old, mid, _young, unpublished = four
    assert claimed_of(engine, four, queued_since=None) == {old, mid, unpublished}


def test_records_whose_lease_began_after_the_oldest_queued_message_minus_a_lease_are_not_due(engine, four):
    """A long queue: the oldest waiting message was sent 50 s ago. The record leased 30 s ago may
    be in a queued message (it is not due); the one leased 100 s ago cannot be (it is)."""
    old, _mid, _young, unpublished = four
    assert claimed_of(engine, four, queued_since=utcnow() - timedelta(seconds=50)) == {old, unpublished}
    # a queue whose head waits for 90 s: even the record leased 100 s ago may still be queued
    assert claimed_of(engine, four, queued_since=utcnow() - timedelta(seconds=90)) == {unpublished}


def test_a_claim_stamps_the_lease_of_what_it_takes(engine, four):
    old, mid, young, unpublished = four
    with engine.begin() as conn:
        claim.claim(conn, limit=1_000_000, grace=0, lease=LEASE)
    ages = leases(engine, four)
    assert all(ages[i] < 2 for i in (old, mid, unpublished)), ages
    assert ages[young] == pytest.approx(5, abs=2)


def test_refreshing_a_lease_restarts_it_never_shortens_a_later_one_and_skips_settled_records(engine, unique):
    ids = store(engine, "students", [student(f"{unique}-{i}") for i in range(3)]).ids
    stale, later, settled = ids
    set_leases(engine, {stale: 100, later: -60, settled: 100})
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE raw_records SET status = 'persisted' WHERE id = :i"), {"i": settled})
        claim.refresh_lease(conn, ids)
    ages = leases(engine, ids)
    assert ages[stale] < 5
    assert ages[later] == pytest.approx(-60, abs=5)
    assert ages[settled] == pytest.approx(100, abs=5)

    with engine.begin() as conn:  # a retry due in 40 s: the lease runs from then
        claim.refresh_lease(conn, [stale], ahead=40)
    assert leases(engine, [stale])[stale] == pytest.approx(-40, abs=5)


# -- the queue's oldest message ----------------------------------------------------------------


def test_the_oldest_queued_message_is_the_first_one_sent_and_an_empty_queue_has_none(app):
    celery = app.extensions["celery"]
    assert oldest_queued_at(celery, PIPELINE_QUEUE) is None
    before = time.time()
    publish_chunks(celery, "students", [1, 2], 500)
    after = time.time()
    time.sleep(0.05)
    publish_chunks(celery, "students", [3], 500)
    sent = oldest_queued_at(celery, PIPELINE_QUEUE)
    assert sent is not None and before <= sent <= after


def test_a_queued_message_without_a_sent_time_makes_the_age_unknown(app, api_redis_url, broker_prefix):
    import redis

    celery = app.extensions["celery"]
    publish_chunks(celery, "students", [1], 500)
    client = redis.Redis.from_url(api_redis_url)
    key = f"{broker_prefix}{PIPELINE_QUEUE}"
    raw = json.loads(client.lindex(key, -1))
    del raw["headers"][SENT_AT_HEADER]
    client.rpush(key, json.dumps(raw))  # the right end is the oldest: popped first
    assert oldest_queued_at(celery, PIPELINE_QUEUE) is None


# -- a live chain keeps its lease ------------------------------------------------------------------


def run_validate(app, message):
    return app.extensions["celery"].tasks["etl.validate"].apply(args=(message,)).get()


def test_a_stage_refreshes_the_lease_only_when_its_message_is_older_than_half_a_lease(make_app, engine, unique):
    app = make_app(outbox_lease_seconds=LEASE)
    ids = store(engine, "students", [student(f"{unique}-{i}") for i in range(2)]).ids
    set_leases(engine, {i: 15 for i in ids})

    fresh = time.time() - LEASE / 4
    out = run_validate(app, chunk_message("students", ids, leased=fresh))
    assert out["leased"] == fresh, "a chain that keeps up passes its lease on"
    assert all(age == pytest.approx(15, abs=5) for age in leases(engine, ids).values()), "and writes nothing"

    out = run_validate(app, chunk_message("students", ids, leased=time.time() - LEASE))
    assert out["leased"] == pytest.approx(time.time(), abs=5)
    assert all(age < 5 for age in leases(engine, ids).values()), "the lease begins again"


# -- the queue of a lookup type's enrich ---------------------------------------------------------


@pytest.mark.parametrize(("type_name", "queue"), [("tutors", "lookups"), ("students", "etl"), ("sessions", "etl")])
def test_enrich_goes_to_the_lookups_queue_only_for_a_type_with_lookups(app, type_name, queue):
    """The router sends each stage where a worker of the Procfile consumes it: validate and
    persist to ``etl``, enrich to ``lookups`` when the type asks an external service."""
    celery = app.extensions["celery"]
    stages = pipeline_chain(celery, chunk_message(type_name, [1])).tasks
    routed = [celery.amqp.router.route(dict(s.options), s.task)["queue"].name for s in stages]
    assert routed == ["etl", queue, "etl"]


def test_the_sweeper_measures_against_the_oldest_message_of_both_pipeline_queues():
    assert sweeper._oldest([None, None]) is None
    assert sweeper._oldest([None, 12.5]) == 12.5
    assert sweeper._oldest([30.0, 12.5]) == 12.5
