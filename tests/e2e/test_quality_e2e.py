"""An ingestion's quality end to end: a batch with a rejection, a real `celery worker` settles it."""

from __future__ import annotations

import pytest

from etl_app.record_types import get_registry

from tests.helpers.payloads import session, student, tutor
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.slow


def test_the_worker_stores_the_quality_of_a_batch_when_it_settles(api, unique, sql):
    r = api.post(
        "students/batch",
        [student(f"{unique}-1"), student(f"{unique}-2", enrolled_on="2026-01-05"), student(f"{unique}-1"),
         student(f"{unique}-3", grade_level=0)],
    )  # fmt: skip
    assert r.status_code == 202, r.text
    answer = r.json()
    ingestion = answer["ingestion_id"]
    (range_error,) = answer["errors"][0]["errors"]["grade_level"]

    # Stored by the worker when the last record settled: nobody asked GET to measure it.
    wait_until(lambda: sql("SELECT quality FROM ingestions WHERE id = :i", i=ingestion)[0][0], 60, what="quality")
    body = api.get(f"ingestions/{ingestion}").json()
    assert body["status"] == "finished" and body["finished_at"] and body["upload"] is None
    assert body["counts"] == {
        "received": 3,
        "in_flight": 0,
        "persisted": 3,
        "dead": 0,
        "rejected": 1,
        "rejections_not_stored": 0,
    }
    assert body["quality"] == {
        "received": 4,
        "accepted": 3,
        "rejected": 1,
        "validity": 0.75,
        "completeness": {"student_id": 1.0, "name": 1.0, "grade_level": 1.0, "enrolled_on": 0.3333, "overall": 0.6667},
        "uniqueness": 0.6667,  # the first key twice
        "integrity": 1.0,
        "timeliness": None,
        "score": 0.7708,  # (0.75 + 2/3 + 2/3 + 1) / 4: overall is grade_level's and enrolled_on's mean
        "level": "fair",
        "top_errors": [{"field": "grade_level", "message": range_error, "count": 1}],
        "dropped_fields": {"total": 0, "fields": {}},
        "nulled_values": {"total": 0, "fields": {}},
    }
    rejections = api.get(f"ingestions/{ingestion}/rejections").json()["rejections"]
    assert [(x["index"], x["natural_key"]) for x in rejections] == [(3, f"{unique}-3")]


def test_sessions_are_complete_when_their_expected_fields_are_and_a_no_show_needs_no_actual_start(api, unique, sql):
    t, st = f"{unique}-t", f"{unique}-st"
    api.submit("tutors", tutor(t))
    api.submit("students", student(st))
    came = session(f"{unique}-1", t, st, engagement_score=0.9, learning_objectives_met=True)
    absent = session(f"{unique}-2", t, st, session_number=2, no_show=True, engagement_score=0.0,
                     learning_objectives_met=False)  # fmt: skip
    del absent["actual_start"]  # a no-show has none
    ingestion = api.submit("sessions/batch", [came, absent])["ingestion_id"]

    wait_until(lambda: sql("SELECT quality FROM ingestions WHERE id = :i", i=ingestion)[0][0], 60, what="quality")
    quality = api.get(f"ingestions/{ingestion}").json()["quality"]
    order = [name for name in get_registry()["sessions"].loader.fields if name not in ("source", "event_time")]
    assert list(quality["completeness"]) == [*order, "overall"]  # the schema's order
    assert quality["completeness"]["actual_start"] == 1.0
    assert quality["completeness"]["late_start_minutes"] == 0.0  # optional, not expected: lowers nothing
    assert quality["completeness"]["overall"] == 1.0
    assert (quality["score"], quality["level"]) == (1.0, "excellent")
