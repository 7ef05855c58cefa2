"""The tutoring pipeline end to end: HTTP → outbox → real celery worker → PostgreSQL."""

from __future__ import annotations

import pytest

from tests.helpers.payloads import feedback, session, student, tutor
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.slow


def test_a_tutor_student_session_and_feedback_land_with_their_derived_fields(api, unique):
    t, st, s, f = f"{unique}-T", f"{unique}-ST", f"{unique}-S", f"{unique}-F"
    for path, payload in [("tutors", tutor(t, onboarding_date="2026-08-25")), ("students", student(st))]:
        assert api.post(path, payload).status_code == 202
    r = api.post("sessions", session(s, t, st))
    assert r.status_code == 202
    api.wait_finished(r.json()["ingestion_id"])
    r = api.post("feedback", feedback(f, s, t, st))
    assert r.status_code == 202
    status = api.wait_finished(r.json()["ingestion_id"])
    assert status["counts"] == {
        "received": 1,
        "in_flight": 0,
        "persisted": 1,
        "dead": 0,
        "rejected": 0,
        "rejections_not_stored": 0,
    }

    tutor_row = api.get(f"records/tutors/{t}").json()
    received = tutor_row["lineage"]["received_at"][:10]
    assert tutor_row["fields"]["subjects"] == ["Math", "Physics"]
    assert tutor_row["derived"]["subject_count"] == 2
    assert tutor_row["derived"]["is_active_today"] is True
    assert tutor_row["lineage"]["schema_version"] == 1 and received

    sess = api.get(f"records/sessions/{s}").json()
    # 2026-11-21T23:30-05:00 is a Saturday night where it happened (Sunday 04:30 in UTC).
    assert sess["derived"] == {
        "is_weekend": True,
        "time_of_day": "night",
        "is_late_start": True,
        "actual_duration_minutes": 54,
        "week_of_year": 47,
        "month_of_year": 11,
    }
    assert sess["fields"]["late_start_minutes"] == 6

    fb = api.get(f"records/feedback/{f}").json()
    # session ends 2026-11-22T05:30Z; submitted 06:00Z → 0.5 h later
    assert fb["derived"] == {
        "is_positive": True,
        "is_poor": False,
        "avg_category_rating": 4.0,
        "category_variance": 1.0,
        "has_text_feedback": True,
        "feedback_delay_hours": 0.5,
    }
    assert fb["fields"]["free_text_feedback"] == "Clear and patient."


def test_children_submitted_before_their_parents_land_once_the_parents_do(api, unique, sql):
    t, st, s, f = f"{unique}-T", f"{unique}-ST", f"{unique}-S", f"{unique}-F"
    fb_ing = api.post("feedback", feedback(f, s, t, st)).json()["ingestion_id"]
    s_ing = api.post("sessions", session(s, t, st)).json()["ingestion_id"]

    def both_waiting():
        rows = sql("SELECT waiting_on FROM raw_records WHERE natural_key IN (:s, :f) ORDER BY natural_key", s=s, f=f)
        return [w.waiting_on for w in rows] if all(w.waiting_on for w in rows) and len(rows) == 2 else None

    # The feedback waits for its session, the session for its tutor (the first parent it lacks).
    assert wait_until(both_waiting, 30, what="both children to wait") == [f"sessions:{s}", f"tutors:{t}"]
    assert api.post("tutors", tutor(t)).status_code == 202
    assert api.post("students", student(st)).status_code == 202
    api.wait_finished(s_ing, timeout=30)
    status = api.wait_finished(fb_ing, timeout=30)
    assert status["counts"]["persisted"] == 1
    assert sql("SELECT count(*) FROM feedback WHERE feedback_id = :f", f=f)[0][0] == 1


def test_feedback_that_disagrees_with_its_session_is_dead_lettered_at_once(api, unique, sql):
    t, st, s = f"{unique}-T", f"{unique}-ST", f"{unique}-S"
    api.post("tutors", tutor(t))
    api.post("students", student(st))
    api.wait_finished(api.post("sessions", session(s, t, st)).json()["ingestion_id"], timeout=30)
    r = api.post("feedback", feedback(f"{unique}-F", s, f"{unique}-OTHER", st))
    status = api.wait_finished(r.json()["ingestion_id"], timeout=30)
    assert status["counts"]["dead"] == 1
    dead = sql("SELECT error_type, error, task_name FROM dead_letters WHERE natural_key = :k", k=f"{unique}-F")
    assert dead[0].error_type == "parent_mismatch"
    assert f"{unique}-OTHER" in dead[0].error and dead[0].task_name == "etl.enrich"


def test_a_child_whose_parent_never_comes_becomes_missing_parent(api, unique, sql):
    r = api.post("sessions", session(f"{unique}-S", f"{unique}-NOBODY", f"{unique}-ST"))
    status = api.wait_finished(r.json()["ingestion_id"], timeout=60)  # budget is 8 s in these tests
    assert status["counts"]["dead"] == 1
    dead = sql("SELECT error_type, error, attempts FROM dead_letters WHERE natural_key = :k", k=f"{unique}-S")
    assert dead[0].error_type == "missing_parent"
    assert f"tutors:{unique}-NOBODY" in dead[0].error and dead[0].attempts >= 2


def test_the_same_batch_posted_twice_leaves_one_row_per_key(api, unique, sql):
    batch = [student(f"{unique}-{i:04d}", grade_level=1 + i % 16) for i in range(1200)]
    first = api.post("students/batch", batch).json()
    second = api.post("students/batch", batch).json()
    assert first["accepted"] == second["accepted"] == 1200
    api.wait_finished(first["ingestion_id"])
    api.wait_finished(second["ingestion_id"])
    rows = sql("SELECT count(*), count(DISTINCT ingestion_id) FROM students WHERE student_id LIKE :p", p=f"{unique}-%")
    assert rows[0][0] == 1200
    settled = sql("SELECT status, count(*) FROM raw_records WHERE natural_key LIKE :p GROUP BY status", p=f"{unique}-%")
    assert settled == [("persisted", 2400)]


def test_a_batch_holding_the_same_key_twice_keeps_the_last(api, unique, sql):
    batch = [student(f"{unique}-A", name="first"), student(f"{unique}-B"), student(f"{unique}-A", name="last")]
    r = api.post("students/batch", batch).json()
    api.wait_finished(r["ingestion_id"])
    assert sql("SELECT name FROM students WHERE student_id = :k", k=f"{unique}-A") == [("last",)]


def test_ndjson_batch_lands(api, unique, sql):
    import orjson

    body = b"\n".join(orjson.dumps(tutor(f"{unique}-{i}")) for i in range(3))
    r = api.http.post(
        f"{api.base}/api/v1/tutors/batch", data=body, timeout=30, headers={"Content-Type": "application/x-ndjson"}
    )
    assert r.status_code == 202
    api.wait_finished(r.json()["ingestion_id"])
    assert sql("SELECT count(*) FROM tutors WHERE tutor_id LIKE :p", p=f"{unique}-%")[0][0] == 3
