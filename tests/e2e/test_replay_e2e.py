"""Dead letters worked end to end: HTTP → real celery worker → dead letter → replay → PostgreSQL."""

from __future__ import annotations

import pytest

from payloads import feedback, session, student, tutor
from procs import wait_until

pytestmark = pytest.mark.slow


def only_dead_letter(api, ingestion_id: str) -> dict:
    r = api.get(f"dead-letters?ingestion_id={ingestion_id}")
    assert r.status_code == 200, r.text
    [dead] = r.json()["dead_letters"]
    return dead


def settled_dead_letter(api, dead_letter_id: int) -> dict:
    def persisted():
        body = api.get(f"dead-letters/{dead_letter_id}").json()
        return body if body["record_status"] == "persisted" and body["last_outcome"] == "persisted" else None

    return wait_until(persisted, 30, what=f"dead letter {dead_letter_id} to show its record persisted")


def test_a_parent_mismatch_is_fixed_and_replayed_with_one_call(api, unique, sql):
    t, st, s, f = f"{unique}-T", f"{unique}-ST", f"{unique}-S", f"{unique}-F"
    api.post("tutors", tutor(t))
    api.post("students", student(st))
    api.wait_finished(api.post("sessions", session(s, t, st)).json()["ingestion_id"], timeout=30)
    wrong = feedback(f, s, f"{unique}-OTHER", st)
    ingestion_id = api.post("feedback", wrong).json()["ingestion_id"]
    assert api.wait_finished(ingestion_id, timeout=30)["counts"]["dead"] == 1
    dead = only_dead_letter(api, ingestion_id)
    assert dead["error_type"] == "parent_mismatch" and dead["record_status"] == "dead"

    r = api.post(f"dead-letters/{dead['id']}/replay", {"payload": {**wrong, "tutor_id": t}})
    assert r.status_code == 202, r.text
    assert r.json()["replayed"] == 1

    status = api.wait_finished(ingestion_id, timeout=30)
    assert status["counts"]["persisted"] == 1 and status["counts"]["dead"] == 0
    assert sql("SELECT tutor_id FROM feedback WHERE feedback_id = :f", f=f) == [(t,)]
    body = settled_dead_letter(api, dead["id"])
    assert body["status"] == "replayed" and body["replay_count"] == 1
    assert body["payload"]["tutor_id"] == f"{unique}-OTHER"  # what failed stays on record


def test_a_session_whose_tutor_comes_after_the_wait_lands_by_itself(api, unique, sql):
    t, st, s = f"{unique}-T", f"{unique}-ST", f"{unique}-S"
    api.wait_finished(api.post("students", student(st)).json()["ingestion_id"], timeout=30)
    ingestion_id = api.post("sessions", session(s, t, st)).json()["ingestion_id"]
    assert api.wait_finished(ingestion_id, timeout=60)["counts"]["dead"] == 1  # budget is 8 s in these tests
    dead = only_dead_letter(api, ingestion_id)
    assert dead["error_type"] == "missing_parent" and dead["replay_count"] == 0
    assert sql("SELECT waiting_on FROM raw_records WHERE id = :i", i=dead["raw_record_id"]) == [(f"tutors:{t}",)]

    assert api.post("tutors", tutor(t)).status_code == 202

    landed = wait_until(
        lambda: sql("SELECT tutor_id FROM sessions WHERE session_id = :s", s=s), 30, what="the session to land"
    )
    assert landed == [(t,)]
    status = api.wait_finished(ingestion_id, timeout=30)
    assert status["counts"]["persisted"] == 1 and status["counts"]["dead"] == 0
    body = settled_dead_letter(api, dead["id"])
    assert body["status"] == "replayed" and body["replay_count"] == 1
