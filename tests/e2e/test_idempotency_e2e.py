"""Submits sent again with their Idempotency-Key, end to end: gunicorn and a real `celery worker`
persist each record once, and the ingestion's counts and quality are those of one submission."""

from __future__ import annotations

import hashlib

import pytest

from tests.helpers.payloads import student

pytestmark = pytest.mark.slow


def post(api, path: str, key: str, **send):
    return api.http.post(f"{api.base}/api/v1/{path}", headers={"Idempotency-Key": key}, timeout=api.timeout, **send)


def test_a_batch_and_a_record_sent_three_times_are_persisted_once_and_counted_once(api, unique, sql):
    since = sql("SELECT clock_timestamp()")[0][0].isoformat()
    batch = [student(f"{unique}-1"), student(f"{unique}-2"), student(f"{unique}-3", grade_level=0)]
    batch_answers = [post(api, "students/batch", f"{unique}-batch", json=batch) for _ in range(3)]
    one_answers = [post(api, "students", f"{unique}-one", json=student(f"{unique}-4")) for _ in range(3)]
    for answers in (batch_answers, one_answers):
        assert [r.status_code for r in answers] == [202] * 3
        assert len({r.content for r in answers}) == 1
        assert [r.headers.get("Idempotent-Replayed") for r in answers] == [None, "true", "true"]
    batch_id, one_id = batch_answers[0].json()["ingestion_id"], one_answers[0].json()["ingestion_id"]

    batch_body = api.wait_settled(batch_id)
    assert batch_body["counts"] == {
        "received": 2,
        "in_flight": 0,
        "persisted": 2,
        "dead": 0,
        "rejected": 1,
        "rejections_not_stored": 0,
    }
    assert (batch_body["quality"]["received"], batch_body["quality"]["accepted"]) == (3, 2)
    assert batch_body["quality"]["uniqueness"] == 1.0
    assert api.wait_settled(one_id)["counts"]["persisted"] == 1

    keys = [f"{unique}-{i}" for i in range(1, 5)]
    stored = sql("SELECT student_id, ingestion_id FROM students WHERE student_id = ANY(:k) ORDER BY 1", k=keys)
    assert [(k, str(i)) for k, i in stored] == [
        (f"{unique}-1", batch_id),
        (f"{unique}-2", batch_id),
        (f"{unique}-4", one_id),
    ]
    raw = sql("SELECT natural_key, count(*) FROM raw_records WHERE natural_key = ANY(:k) GROUP BY 1", k=keys)
    assert sorted(raw) == [(f"{unique}-1", 1), (f"{unique}-2", 1), (f"{unique}-4", 1)]
    listed = api.http.get(
        f"{api.base}/api/v1/ingestions", params={"record_type": "students", "since": since}, timeout=api.timeout
    ).json()["ingestions"]
    assert sorted(i["id"] for i in listed) == sorted([batch_id, one_id])


def test_an_upload_sent_again_is_stored_parsed_and_persisted_once(api, unique, sql):
    data = f"student_id,name,grade_level\n{unique}-u1,Ann,9\n{unique}-u2,Bo,10\n".encode()
    files = {"file": ("students.csv", data, "text/csv")}
    first = post(api, "students/upload", f"{unique}-upload", files=files)
    again = post(api, "students/upload", f"{unique}-upload", files=files)
    assert first.status_code == again.status_code == 202 and again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    ingestion_id = first.json()["ingestion_id"]
    body = api.wait_settled(ingestion_id)
    assert body["upload"]["rows_read"] == 2 and body["counts"]["persisted"] == 2
    stored = sql("SELECT id FROM uploads WHERE sha256 = :s", s=hashlib.sha256(data).hexdigest())
    assert [str(i) for (i,) in stored] == [ingestion_id]  # the file stored once
    raw = sql("SELECT count(*) FROM raw_records WHERE natural_key LIKE :k", k=f"{unique}-u%")
    assert raw[0][0] == 2
