"""Dead letters worked end to end: HTTP → real celery worker → dead letter → replay → PostgreSQL."""

from __future__ import annotations

import pytest

from tests.helpers.payloads import feedback, session, student, tutor
from tests.helpers.procs import wait_until

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


def mismatched_feedback(api, unique: str) -> tuple[dict, str, dict]:
    """Feedback ``<unique>-F`` naming another tutor than its session's (``<unique>-T``), dead-lettered
    as parent_mismatch: ``(its payload, its ingestion id, its dead letter)``."""
    t, st, s = f"{unique}-T", f"{unique}-ST", f"{unique}-S"
    api.post("tutors", tutor(t))
    api.post("students", student(st))
    api.wait_finished(api.post("sessions", session(s, t, st)).json()["ingestion_id"], timeout=30)
    wrong = feedback(f"{unique}-F", s, f"{unique}-OTHER", st)
    ingestion_id = api.post("feedback", wrong).json()["ingestion_id"]
    assert api.wait_finished(ingestion_id, timeout=30)["counts"]["dead"] == 1
    dead = only_dead_letter(api, ingestion_id)
    assert dead["error_type"] == "parent_mismatch" and dead["record_status"] == "dead"
    return wrong, ingestion_id, dead


def test_a_parent_mismatch_is_fixed_and_replayed_with_one_call(api, unique, sql):
    t, f = f"{unique}-T", f"{unique}-F"
    wrong, ingestion_id, dead = mismatched_feedback(api, unique)

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


def test_a_correction_older_than_the_stored_record_is_reported_superseded(api, unique, sql):
    """The dead letter's key was stored again since (a later received_at): the correction is
    settled but does not land, and the dead letter says which record kept the key."""
    t, f = f"{unique}-T", f"{unique}-F"
    wrong, ingestion_id, dead = mismatched_feedback(api, unique)

    newer = {**wrong, "tutor_id": t, "overall_rating": 5}  # the key sent again, right, and stored
    newer_ingestion = api.post("feedback", newer).json()["ingestion_id"]
    assert api.wait_finished(newer_ingestion, timeout=30)["counts"]["persisted"] == 1
    [(newer_raw_id,)] = sql("SELECT raw_record_id FROM feedback WHERE feedback_id = :f", f=f)

    r = api.post(f"dead-letters/{dead['id']}/replay", {"payload": {**wrong, "tutor_id": t, "overall_rating": 1}})
    assert r.status_code == 202, r.text
    status = api.wait_finished(ingestion_id, timeout=30)
    assert status["counts"]["persisted"] == 1 and status["counts"]["dead"] == 0  # settled all the same

    assert sql("SELECT overall_rating, raw_record_id FROM feedback WHERE feedback_id = :f", f=f) == [(5, newer_raw_id)]
    body = api.get(f"dead-letters/{dead['id']}").json()
    assert (body["status"], body["last_outcome"], body["record_status"]) == ("superseded", "superseded", "persisted")
    assert body["superseded_by"] == {"raw_record_id": newer_raw_id, "ingestion_id": newer_ingestion}
    listed = api.get(f"dead-letters?ingestion_id={ingestion_id}&status=superseded").json()["dead_letters"]
    assert [(d["id"], d["superseded_by"]) for d in listed] == [(dead["id"], body["superseded_by"])]
    assert api.get(f"dead-letters?ingestion_id={ingestion_id}&status=replayed").json()["dead_letters"] == []
