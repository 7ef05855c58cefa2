"""An ingestion's quality end to end: a batch with a rejection, a real `celery worker` settles it."""

from __future__ import annotations

import pytest

from tests.helpers.payloads import student
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
        "completeness": {"student_id": 1.0, "name": 1.0, "grade_level": 1.0, "enrolled_on": 0.3333, "overall": 0.7778},
        "uniqueness": 0.6667,  # the first key twice
        "integrity": 1.0,
        "timeliness": None,
        "score": 0.7986,  # (0.75 + 7/9 + 2/3 + 1) / 4
        "level": "fair",
        "top_errors": [{"field": "grade_level", "message": range_error, "count": 1}],
        "dropped_fields": {"total": 0, "fields": {}},
        "nulled_values": {"total": 0, "fields": {}},
    }
    rejections = api.get(f"ingestions/{ingestion}/rejections").json()["rejections"]
    assert [(x["index"], x["natural_key"]) for x in rejections] == [(3, f"{unique}-3")]
