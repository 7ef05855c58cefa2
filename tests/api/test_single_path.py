"""Single records at web speed: while they trickle in, the outbox relay sends them in a few large
chains (not one small chain per relay window), and each record is stored, answered and sent
exactly once; a submit whose database connection died is a 503 and the next one is stored."""

from __future__ import annotations

import base64
import json
import time
import uuid

import redis
import sqlalchemy as sa

from etl_app.api.bodies import Accepted
from etl_app.api.spec import dump

from tests.helpers.payloads import student, tutor
from tests.helpers.procs import wait_until


def queued_chunks(redis_url: str, prefix: str) -> list[list[int]]:
    """The raw-record ids of each chain waiting in the ``etl`` queue (its first task's chunk)."""
    chunks = []
    for raw in redis.Redis.from_url(redis_url).lrange(f"{prefix}etl", 0, -1):
        args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
        chunks.append(list(args[0]["ids"]))
    return chunks


def raw_ids(engine: sa.Engine, ingestion_ids: list[str]) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                sa.text("SELECT id FROM raw_records WHERE ingestion_id = ANY(CAST(:i AS uuid[])) ORDER BY id"),
                {"i": ingestion_ids},
            )
        )


def test_records_that_trickle_in_are_sent_in_a_few_chains_each_exactly_once(
    make_app, auth, engine, unique, api_redis_url, broker_prefix
):
    # a short first window: without the adaptive window, a relay round (and a chain) every 20 ms
    client = make_app(relay_window_ms=20, relay_max_window_ms=1000).test_client()
    ingestions = []
    for i in range(30):  # one record about every 60 ms, for about two seconds
        r = client.post("/api/v1/students", json=student(f"{unique}-{i}"), headers=auth)
        assert r.status_code == 202
        ingestions.append(r.get_json()["ingestion_id"])
        time.sleep(0.06)
    ours = set(raw_ids(engine, ingestions))
    assert len(ours) == 30

    def sent() -> list[list[int]]:
        return [[i for i in chunk if i in ours] for chunk in queued_chunks(api_redis_url, broker_prefix)]

    wait_until(lambda: sum(len(c) for c in sent()) >= 30, 15, what="the relay to send every record")
    chains = [c for c in sent() if c]
    carried = sorted(i for c in chains for i in c)
    assert carried == sorted(ours)  # each record in exactly one chain
    # a round every 20 ms would have sent one chain per record or two (at least 15); the window
    # grows while rounds are small, so the two seconds' records went in a handful of chains
    assert len(chains) <= 10, [len(c) for c in chains]


def test_a_single_record_stores_the_same_row_as_a_batch_of_one(make_app, auth, engine, unique):
    client = make_app().test_client()
    one = client.post("/api/v1/tutors", json=tutor(f"{unique}-one"), headers=auth).get_json()
    batch = client.post("/api/v1/tutors/batch", json=[tutor(f"{unique}-batch")], headers=auth).get_json()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT i.source, i.accepted, i.rejected, i.record_type, r.natural_key, r.payload, r.status, "
                "r.received_at = i.created_at AS same_time, r.updated_at = r.received_at AS updated "
                "FROM ingestions i JOIN raw_records r ON r.ingestion_id = i.id WHERE i.id = ANY(CAST(:i AS uuid[])) "
                "ORDER BY r.natural_key DESC"
            ),
            {"i": [one["ingestion_id"], batch["ingestion_id"]]},
        ).all()
    assert [tuple(r) for r in rows] == [
        ("api", 1, 0, "tutors", f"{unique}-one", tutor(f"{unique}-one"), "received", True, True),
        ("batch", 1, 0, "tutors", f"{unique}-batch", tutor(f"{unique}-batch"), "received", True, True),
    ]


def test_a_submit_on_a_dead_connection_is_a_503_and_the_next_one_is_stored(make_app, auth, engine, unique):
    app = make_app(db_pool_size=1)
    client = app.test_client()
    first = client.post("/api/v1/tutors", json=tutor(f"{unique}-0"), headers=auth)
    assert first.status_code == 202, first.get_json()
    with engine.connect() as conn:  # end the app's pooled connection behind its back
        ended = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'idle' AND query LIKE 'WITH ingestion AS%' AND query LIKE '%$1%'"
            )
        ).scalar()
    assert ended >= 1
    # at once (the pool pings only connections idle for half a second): 503, nothing stored;
    # or, if the pool pinged it, 202; either way the next one is stored
    second = client.post("/api/v1/tutors", json=tutor(f"{unique}-1"), headers=auth)
    assert second.status_code in (202, 503), second.get_json()
    if second.status_code == 503:
        assert second.get_json()["error"] == "database_unavailable"
    third = client.post("/api/v1/tutors", json=tutor(f"{unique}-2"), headers=auth)
    assert third.status_code == 202, third.get_json()
    with engine.connect() as conn:
        keys = set(
            conn.scalars(sa.text("SELECT natural_key FROM raw_records WHERE natural_key LIKE :p"), {"p": f"{unique}-%"})
        )
    assert keys == {f"{unique}-0", f"{unique}-2"} | ({f"{unique}-1"} if second.status_code == 202 else set())


def test_the_single_answer_is_the_documented_schema_s_dump_byte_for_byte(make_app, auth, unique):
    app = make_app()
    r = app.test_client().post("/api/v1/tutors", json=tutor(f"{unique}-answer"), headers=auth)
    assert r.status_code == 202 and r.mimetype == "application/json"
    ingestion_id = uuid.UUID(r.get_json()["ingestion_id"])
    with app.app_context():
        expected = app.json.dumps(dump(Accepted, {"ingestion_id": ingestion_id, "accepted": 1, "rejected": 0}))
    assert r.data == expected.encode()
