"""The dead-letter consumer has a process of its own (the Procfile's ``deadletter``): the
pipeline's workers never take dead letters, so a flood of failures waits for its own consumer
while valid records keep landing, and lands once that consumer runs."""

from __future__ import annotations

import re
import uuid

import pytest
import redis
import requests
import sqlalchemy as sa

from payloads import feedback, session, student, tutor
from procs import ROOT, Stack, wait_until
from support import API_KEY, KEY_PREFIX, queue_length, redis_db

pytestmark = pytest.mark.slow

FLOOD = 300  # feedback records that fail in enrich (parent_mismatch)
VALID = 300


def procfile_queues(process: str) -> str:
    """The ``--queues`` of a Procfile process."""
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith(f"{process}:"))
    return re.search(r"--queues[= ](\S+)", line).group(1)


def test_the_procfile_gives_dead_letters_a_worker_of_their_own():
    assert procfile_queues("worker") == "etl"
    assert procfile_queues("deadletter") == "dead_letter"


def test_a_flood_of_failures_waits_for_its_own_consumer_while_the_pipeline_goes_on(
    database_url, engine, tmp_path, unique
):
    redis_url = redis_db(15)
    prefix = f"{KEY_PREFIX}dl{uuid.uuid4().hex[:6]}:"
    stack = Stack(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ETL_API_KEYS": API_KEY,
            "ETL_BROKER_KEY_PREFIX": prefix,
        },
        tmp_path,
    )
    http = None
    try:
        stack.worker(queues=procfile_queues("worker"))
        stack.web()
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {API_KEY}"
        base = f"{stack.web_url}/api/v1"

        def post(path: str, body) -> str:
            r = http.post(f"{base}/{path}", json=body, timeout=30)
            assert r.status_code == 202, r.text
            return r.json()["ingestion_id"]

        def status(ingestion_id: str) -> dict:
            return http.get(f"{base}/ingestions/{ingestion_id}", timeout=30).json()

        t, st, other, s = f"{unique}-T", f"{unique}-ST", f"{unique}-OTHER", f"{unique}-S"

        def land(path: str, body) -> None:
            ingestion_id = post(path, body)
            wait_until(lambda: status(ingestion_id)["status"] == "finished", 60, what=f"{path} to land")

        for path, body in [("tutors", tutor(t)), ("students", student(st)), ("students", student(other))]:
            land(path, body)
        land("sessions", session(s, t, st))

        # feedback whose student is not its session's: parent_mismatch, dead-lettered in enrich
        bad = post("feedback/batch", [feedback(f"{unique}-F{i}", s, t, other) for i in range(FLOOD)])
        good = post("students/batch", [student(f"{unique}-V{i}") for i in range(VALID)])

        assert wait_until(lambda: status(good)["counts"]["persisted"] == VALID, 60, what="the valid records")
        wait_until(lambda: queue_length(redis_url, prefix, "dead_letter") > 0, 60, what="dead letters queued")
        assert status(bad)["counts"] == {
            "received": FLOOD,
            "in_flight": FLOOD,
            "persisted": 0,
            "dead": 0,
            "rejected": 0,
        }

        stack.worker(name="deadletter", queues=procfile_queues("deadletter"), concurrency=1)
        done = wait_until(lambda: (b := status(bad))["status"] == "finished" and b, 60, what="the dead letters")
        assert done["counts"]["dead"] == FLOOD
        assert queue_length(redis_url, prefix, "dead_letter") == 0
        with engine.connect() as conn:
            kinds = conn.execute(
                sa.text("SELECT error_type, count(*) FROM dead_letters WHERE ingestion_id = :i GROUP BY 1"), {"i": bad}
            ).all()
        assert kinds == [("parent_mismatch", FLOOD)]
    finally:
        if http is not None:
            http.close()
        stack.stop()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
