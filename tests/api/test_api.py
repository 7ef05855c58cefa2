"""The API's answers for good and bad input (no worker: what the API itself promises)."""

from __future__ import annotations

import base64
import json
import uuid

import orjson
import pytest
import redis
import sqlalchemy as sa

from tests.helpers.payloads import feedback, session, student, tutor
from tests.helpers.procs import wait_until


def raw_rows(engine, ingestion_id):
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT id, natural_key, status, payload, enqueued_at FROM raw_records "
                "WHERE ingestion_id = :i ORDER BY id"
            ),
            {"i": ingestion_id},
        ).all()


def queued_messages(redis_url: str, prefix: str) -> int:
    return redis.Redis.from_url(redis_url).llen(f"{prefix}etl")


def queued_raw_ids(redis_url: str, prefix: str) -> list[int]:
    """The raw-record ids the chains waiting in the ``etl`` queue carry (each first task's chunk)."""
    ids: list[int] = []
    for raw in redis.Redis.from_url(redis_url).lrange(f"{prefix}etl", 0, -1):
        args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
        ids += args[0]["ids"]
    return ids


# -- accepted -----------------------------------------------------------------------------------


def test_single_record_is_committed_to_the_outbox_before_202_and_a_chain_is_queued(
    client, auth, engine, unique, api_redis_url, broker_prefix
):
    r = client.post("/api/v1/tutors", json=tutor(unique), headers=auth)
    assert r.status_code == 202
    body = r.get_json()
    assert body["accepted"] == 1 and body["rejected"] == 0
    rows = raw_rows(engine, body["ingestion_id"])
    assert [(row.natural_key, row.status) for row in rows] == [(unique, "received")]
    assert rows[0].payload == tutor(unique)  # stored as received
    # small submissions are published by the outbox relay, a moment after the 202
    # (the relay claims every unpublished record of the database: records other tests left may
    # ride along, so the check is that exactly one queued chain carries this one)
    wait_until(
        lambda: queued_raw_ids(api_redis_url, broker_prefix).count(rows[0].id) == 1, 10, what="the relay to publish"
    )
    assert raw_rows(engine, body["ingestion_id"])[0].enqueued_at is not None


def test_batch_stores_valid_records_and_reports_invalid_ones_by_index(client, auth, engine, unique):
    batch = [tutor(f"{unique}-0"), {"tutor_id": f"{unique}-1"}, tutor(f"{unique}-2", email="not-an-email")]
    r = client.post("/api/v1/tutors/batch", json=batch, headers=auth)
    assert r.status_code == 202
    body = r.get_json()
    assert (body["accepted"], body["rejected"]) == (1, 2)
    assert [e["index"] for e in body["errors"]] == [1, 2]
    assert "name" in body["errors"][0]["errors"]
    assert list(body["errors"][1]["errors"]) == ["email"]
    assert [row.natural_key for row in raw_rows(engine, body["ingestion_id"])] == [f"{unique}-0"]


def test_ndjson_batch_with_a_broken_line_rejects_only_that_line(client, auth, engine, unique):
    lines = [
        orjson.dumps(student(f"{unique}-a")),
        b"{not json",
        b"",
        orjson.dumps(student(f"{unique}-b", grade_level=99)),
    ]
    r = client.post("/api/v1/students/batch", data=b"\n".join(lines), headers=auth, content_type="application/x-ndjson")
    assert r.status_code == 202
    body = r.get_json()
    assert (body["accepted"], body["rejected"]) == (1, 2)
    assert body["errors"][0]["index"] == 1 and "_line" in body["errors"][0]["errors"]
    assert body["errors"][1]["index"] == 2 and "grade_level" in body["errors"][1]["errors"]


def test_a_batch_is_published_as_chunks_not_one_chain_per_record(make_app, auth, api_redis_url, broker_prefix, unique):
    client = make_app(chunk_size=10).test_client()
    r = client.post("/api/v1/students/batch", json=[student(f"{unique}-{i}") for i in range(25)], headers=auth)
    assert r.status_code == 202
    assert queued_messages(api_redis_url, broker_prefix) == 3


def test_a_batch_of_hundreds_publishes_its_own_validated_chain_when_chunks_are_larger(
    make_app, auth, engine, api_redis_url, broker_prefix, unique
):
    """Chunks may be larger than a batch worth a chain of its own: such a batch is not left to the
    relay (which would claim and validate its records a second time) but published at once, with
    the values the API validated."""
    client = make_app(chunk_size=2000).test_client()
    r = client.post("/api/v1/students/batch", json=[student(f"{unique}-{i}") for i in range(600)], headers=auth)
    assert r.status_code == 202
    rows = raw_rows(engine, r.get_json()["ingestion_id"])
    assert len(rows) == 600 and all(row.enqueued_at is not None for row in rows)  # not left unpublished
    messages = redis.Redis.from_url(api_redis_url).lrange(f"{broker_prefix}etl", 0, -1)
    chunks = [json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0] for raw in messages]
    assert [(len(c["ids"]), c.get("validated")) for c in chunks] == [(600, True)]


def test_ingestion_reports_counts_by_status(client, auth, unique):
    r = client.post("/api/v1/students/batch", json=[student(f"{unique}-1"), {"student_id": "bad id!"}], headers=auth)
    ingestion_id = r.get_json()["ingestion_id"]
    body = client.get(f"/api/v1/ingestions/{ingestion_id}", headers=auth).get_json()
    assert body["counts"] == {
        "received": 1,
        "in_flight": 1,
        "persisted": 0,
        "dead": 0,
        "rejected": 1,
        "rejections_not_stored": 0,
    }
    assert body["status"] == "running" and body["finished_at"] is None
    assert body["record_type"] == "students"


def test_broker_down_still_answers_202_and_leaves_records_unpublished_for_the_relay_and_sweeper(
    make_app, auth, engine, unique
):
    """Both paths: a large batch publishes itself (and fails), a small one goes to the relay (which
    cannot publish either). Either way the records are stored and marked unpublished. A hang
    would be stopped by the suite's per-test timeout.

    The relay keeps trying: while one of its rounds holds the records claimed (``enqueued_at``
    set) it has not failed yet, so the test waits for the records to be flagged unpublished
    between rounds rather than reading them at one arbitrary moment."""
    client = make_app(broker_url="redis://127.0.0.1:1/0", chunk_size=2, publish_timeout_seconds=1.0).test_client()
    large = client.post("/api/v1/students/batch", json=[student(f"{unique}-{i}") for i in range(3)], headers=auth)
    small = client.post("/api/v1/tutors", json=tutor(unique), headers=auth)
    assert (large.status_code, small.status_code) == (202, 202)
    for r in (large, small):
        ingestion_id = r.get_json()["ingestion_id"]
        rows = raw_rows(engine, ingestion_id)
        assert rows and all(row.status == "received" for row in rows)
        wait_until(
            lambda i=ingestion_id: all(row.enqueued_at is None for row in raw_rows(engine, i)),
            10,
            0.02,
            what="the records flagged unpublished",
        )


# -- reading ------------------------------------------------------------------------------------


def test_record_types_lists_the_four_tutoring_types_with_fields(client, auth):
    body = client.get("/api/v1/record-types", headers=auth).get_json()
    names = [t["name"] for t in body["record_types"]]
    assert names == ["tutors", "students", "sessions", "feedback"]
    sessions = body["record_types"][2]
    assert sessions["key"] == "session_id"
    assert {p["record_type"] for p in sessions["parents"]} == {"tutors", "students"}
    assert "time_of_day" in sessions["derived_fields"]
    assert sessions["contract"] == {"unknown": "reject", "wrong_type": "reject"}  # as declared


def test_unknown_record_and_ingestion_are_404(client, auth):
    assert client.get("/api/v1/records/tutors/nobody", headers=auth).status_code == 404
    assert client.get(f"/api/v1/ingestions/{uuid.uuid4()}", headers=auth).status_code == 404
    r = client.get("/api/v1/ingestions/not-a-uuid", headers=auth)
    assert r.status_code == 404 and r.get_json()["error"] == "not_found"


def test_openapi_is_generated_from_the_schemas(client, auth):
    spec = client.get("/openapi.json", headers=auth).get_json()
    assert spec["openapi"].startswith("3.")
    props = spec["components"]["schemas"]["SessionSchema"]["properties"]
    assert {"session_id", "scheduled_start", "duration_minutes"} <= set(props)
    assert "/api/v1/feedback/batch" in spec["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and b"/openapi.json" in docs.data


def test_health_is_open_and_ready_checks_database_and_broker_and_reports_the_cache(client, make_app, api_redis_url):
    assert client.get("/health").get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "ok", "cache": "ok"}
    down = make_app(broker_url="redis://127.0.0.1:1/0").test_client().get("/ready")
    assert down.status_code == 503 and down.get_json()["checks"]["broker"].startswith("unavailable")
    # the cache down alone: reported, and the web stays ready (records are still taken)
    no_cache = make_app(broker_url=api_redis_url, redis_url="redis://127.0.0.1:1/0").test_client().get("/ready")
    assert no_cache.status_code == 200 and no_cache.get_json()["status"] == "ready"
    assert no_cache.get_json()["checks"]["cache"] == "unavailable: ConnectionError"


# -- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_missing_or_wrong_key_is_401(client, headers):
    r = client.post("/api/v1/tutors", json=tutor("x"), headers=headers)
    assert r.status_code == 401
    assert r.get_json()["error"] == "unauthorized"
    assert client.get("/api/v1/record-types", headers=headers).status_code == 401


def test_unknown_type_is_404(client, auth):
    r = client.post("/api/v1/teachers", json={"x": 1}, headers=auth)
    assert r.status_code == 404 and r.get_json()["error"] == "unknown_record_type"


def test_single_invalid_record_is_422_with_field_errors(client, auth, engine):
    r = client.post("/api/v1/sessions", json=session("s1", "t1", "st1", duration_minutes=4), headers=auth)
    assert r.status_code == 422
    body = r.get_json()
    assert body["error"] == "validation_failed" and list(body["errors"]) == ["duration_minutes"]


def test_batch_with_nothing_valid_is_422(client, auth):
    r = client.post("/api/v1/feedback/batch", json=[{"feedback_id": "f"}, 5], headers=auth)
    assert r.status_code == 422
    body = r.get_json()
    assert body["accepted"] == 0 and [e["index"] for e in body["errors"]] == [0, 1]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"tutor_id": "x", ', "invalid_json"),  # truncated
        (b"{'tutor_id': 'x'}", "invalid_json"),  # not JSON
        (b'{"a": NaN}', "invalid_json"),
        (b'{"a": Infinity}', "invalid_json"),
        (b'{"a": 1e400}', "invalid_json"),  # would be inf: jsonb refuses it
        (b'{"a": "\\ud800"}', "invalid_json"),  # lone surrogate
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),  # deeply nested: no RecursionError
        (b"   ", "empty_body"),
        (b"[1, 2]", "invalid_body"),  # an array to the single endpoint
    ],
)
def test_malformed_bodies_are_400_with_a_json_error(client, auth, body, error):
    r = client.post("/api/v1/tutors", data=body, headers=auth, content_type="application/json")
    assert r.status_code == 400
    assert r.get_json()["error"] == error and r.get_json()["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_wrong_content_type_is_415(client, auth, content_type):
    kwargs = {"content_type": content_type} if content_type else {}
    r = client.post("/api/v1/tutors", data=orjson.dumps(tutor("x")), headers=auth, **kwargs)
    assert r.status_code == 415 and r.get_json()["error"] == "unsupported_media_type"
    r = client.post("/api/v1/tutors/batch", data=b"[]", headers=auth, **kwargs)
    assert r.status_code == 415


def test_body_over_the_limit_is_413(make_app, auth):
    client = make_app(max_body_bytes=1000).test_client()
    r = client.post(
        "/api/v1/tutors/batch",
        data=orjson.dumps([tutor(f"t{i}") for i in range(50)]),
        headers=auth,
        content_type="application/json",
    )
    assert r.status_code == 413 and r.get_json()["error"] == "payload_too_large"


def test_batch_over_the_item_limit_is_413(make_app, auth):
    client = make_app(max_batch_items=3).test_client()
    r = client.post("/api/v1/students/batch", json=[student(f"s{i}") for i in range(4)], headers=auth)
    assert r.status_code == 413 and r.get_json()["error"] == "too_many_records"


@pytest.mark.parametrize(
    ("record_type", "payload", "field"),
    [
        ("tutors", tutor("x", name="nul\x00byte"), "name"),
        ("tutors", tutor("x", unexpected=1), "unexpected"),
        ("tutors", tutor("x", name=None), "name"),
        ("tutors", tutor("x", age="30"), "age"),  # numbers as strings
        ("tutors", tutor("x", onboarding_date="1899-12-31"), "onboarding_date"),
        ("tutors", tutor("x", onboarding_date="2999-01-01"), "onboarding_date"),
        ("tutors", tutor("x" * 65), "tutor_id"),
        ("tutors", tutor("../../etc/passwd"), "tutor_id"),
        ("sessions", session("s", "t", "st", scheduled_start="10000-01-01T00:00:00Z"), "scheduled_start"),
        ("feedback", feedback("f", "s", "t", "st", free_text_feedback="x" * 5001), "free_text_feedback"),
    ],
)
def test_bad_values_are_422_naming_the_field(client, auth, record_type, payload, field):
    r = client.post(f"/api/v1/{record_type}", json=payload, headers=auth)
    assert r.status_code == 422, r.get_json()
    assert field in r.get_json()["errors"]


def test_unknown_field_with_nul_in_its_name_is_refused_cleanly(client, auth):
    r = client.post(
        "/api/v1/students/batch",
        data=b'[{"student_id": "s1", "bad\\u0000key": 1}]',
        headers=auth,
        content_type="application/json",
    )
    assert r.status_code == 422
    errors = r.get_json()["errors"][0]["errors"]
    assert len(errors) == 1 and next(iter(errors)).startswith("bad")


def test_sql_injection_strings_are_stored_verbatim(client, auth, engine, unique):
    name = "Robert'); DROP TABLE students;--"
    r = client.post("/api/v1/students", json=student(unique, name=name), headers=auth)
    assert r.status_code == 202
    assert raw_rows(engine, r.get_json()["ingestion_id"])[0].payload["name"] == name
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('students') IS NOT NULL")).scalar()


def test_naive_timestamps_are_accepted_as_utc(client, auth):
    r = client.post(
        "/api/v1/sessions",
        json=session("s-naive", "t", "st", scheduled_start="2026-11-21T10:00:00", actual_start=None),
        headers=auth,
    )
    assert r.status_code == 202


def test_metrics_report_outbox_dead_letters_and_requests(client, auth, unique):
    client.post("/api/v1/students/batch", json=[student(unique), {"student_id": "bad id"}], headers=auth)
    assert client.get("/metrics").status_code == 401
    text = client.get("/metrics", headers=auth).get_data(as_text=True)
    assert 'etl_records_accepted_total{record_type="students"}' in text
    assert 'etl_records_rejected_total{record_type="students"}' in text
    assert 'etl_outbox_unsettled_records{record_type="students"}' in text
    assert "etl_database_up 1.0" in text
    assert 'etl_api_requests_total{endpoint="ingest.post_batch",status="202"} 1.0' in text


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("lessons:unknown=drop", "ETL_SCHEMA_CONTRACT: no record type 'lessons'"),
        ("students:unknown=evolve", "unknown of 'students' must be one of reject, keep, drop, not 'evolve'"),
    ],
)
def test_a_schema_contract_setting_the_types_cannot_take_stops_the_app_at_its_start(make_app, setting, message):
    with pytest.raises(ValueError) as caught:
        make_app(schema_contract=setting)
    assert message in str(caught.value)
