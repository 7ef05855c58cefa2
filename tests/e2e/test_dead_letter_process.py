"""The dead-letter consumer has a process of its own (the Procfile's ``dead_letter``): the
pipeline's workers never take dead letters, so a flood of failures waits for its own consumer
while valid records keep landing, and lands once that consumer runs."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.helpers.payloads import feedback, session, student, tutor
from tests.helpers.procs import procfile_queues, running_stack, wait_until
from tests.helpers.support import Api, queue_length, redis_db

pytestmark = pytest.mark.slow

FLOOD = 300  # feedback records that fail in enrich (parent_mismatch)
VALID = 300


def test_the_procfile_gives_dead_letters_a_worker_of_their_own():
    assert procfile_queues("worker") == "etl,jobs,uploads"
    assert procfile_queues("lookups") == "lookups"
    assert procfile_queues("dead_letter") == "dead_letter"


def test_a_flood_of_failures_waits_for_its_own_consumer_while_the_pipeline_goes_on(
    database_url, engine, tmp_path, unique
):
    redis_url = redis_db(15)
    with running_stack(database_url, redis_url, tmp_path) as stack:
        stack.worker(queues=procfile_queues("worker"))
        stack.worker(name="lookups", queues=procfile_queues("lookups"), concurrency=1)
        stack.web()
        api = Api(stack.web_url)

        def land(path: str, body) -> None:
            api.wait_finished(api.submit(path, body)["ingestion_id"])

        t, st, other, s = f"{unique}-T", f"{unique}-ST", f"{unique}-OTHER", f"{unique}-S"
        for path, body in [("tutors", tutor(t)), ("students", student(st)), ("students", student(other))]:
            land(path, body)
        land("sessions", session(s, t, st))

        # feedback whose student is not its session's: parent_mismatch, dead-lettered in enrich
        bad = api.submit("feedback/batch", [feedback(f"{unique}-F{i}", s, t, other) for i in range(FLOOD)])
        good = api.submit("students/batch", [student(f"{unique}-V{i}") for i in range(VALID)])

        def counts(ingestion: dict) -> dict:
            return api.get(f"ingestions/{ingestion['ingestion_id']}").json()["counts"]

        wait_until(lambda: counts(good)["persisted"] == VALID, 60, what="the valid records")
        wait_until(lambda: queue_length(redis_url, stack.prefix, "dead_letter") > 0, 60, what="dead letters queued")
        assert counts(bad) == {
            "received": FLOOD,
            "in_flight": FLOOD,
            "persisted": 0,
            "dead": 0,
            "rejected": 0,
            "rejections_not_stored": 0,
        }

        stack.worker(name="dead_letter", queues=procfile_queues("dead_letter"), concurrency=1)
        done = api.wait_finished(bad["ingestion_id"])
        assert done["counts"]["dead"] == FLOOD
        assert queue_length(redis_url, stack.prefix, "dead_letter") == 0
        with engine.connect() as conn:
            kinds = conn.execute(
                sa.text("SELECT error_type, count(*) FROM dead_letters WHERE ingestion_id = :i GROUP BY 1"),
                {"i": bad["ingestion_id"]},
            ).all()
        assert kinds == [("parent_mismatch", FLOOD)]
