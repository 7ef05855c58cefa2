"""The no-op endpoint `make bench` measures the web tier with (etl_app.api.noop): served only with
ETL_BENCH_NOOP, behind the same key, right and rate limit as a submit, storing nothing."""

from __future__ import annotations

import sqlalchemy as sa

from tests.api.test_roles import KEYS, bearer
from tests.helpers.payloads import student
from tests.helpers.support import API_KEY

KEY_ENTRIES = (API_KEY, *(f"{key}:{role}" for role, key in KEYS.items()))


def _raw_records(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM raw_records")).scalar_one()


def test_without_the_setting_there_is_no_such_route(make_app):
    client = make_app(api_keys=KEY_ENTRIES).test_client()
    r = client.post("/api/v1/_noop", json={"a": 1}, headers=bearer(KEYS["ingest"]))
    assert r.status_code == 404 and r.json["error"] == "unknown_record_type"
    assert "/api/v1/_noop" not in client.get("/openapi.json", headers=bearer(KEYS["ingest"])).json["paths"]


def test_an_ingest_key_gets_202_and_nothing_is_stored(make_app, engine, unique):
    client = make_app(api_keys=KEY_ENTRIES, bench_noop=True).test_client()
    before = _raw_records(engine)
    r = client.post("/api/v1/_noop", json=student(unique), headers=bearer(KEYS["ingest"]))
    assert (r.status_code, r.json) == (202, {"accepted": 1, "rejected": 0})
    assert r.headers["X-Frame-Options"] == "DENY"  # the app's after-request hooks ran
    assert _raw_records(engine) == before
    assert "/api/v1/_noop" not in client.get("/openapi.json", headers=bearer(KEYS["ingest"])).json["paths"]
    # "_noop" is not taken for a record type's name: the real submits still route
    assert client.post("/api/v1/students", json=student(unique), headers=bearer(KEYS["ingest"])).status_code == 202


def test_it_refuses_what_a_submit_refuses(make_app):
    client = make_app(api_keys=KEY_ENTRIES, bench_noop=True).test_client()
    assert client.post("/api/v1/_noop", json={"a": 1}).status_code == 401
    assert client.post("/api/v1/_noop", json={"a": 1}, headers=bearer("wrong")).status_code == 401
    forbidden = client.post("/api/v1/_noop", json={"a": 1}, headers=bearer(KEYS["reader"]))
    assert forbidden.status_code == 403 and forbidden.json["error"] == "forbidden"
    ingest = bearer(KEYS["ingest"])
    bad = client.post("/api/v1/_noop", data=b"{nope", headers={**ingest, "Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json["error"] == "invalid_json"
    text = client.post("/api/v1/_noop", data=b"{}", headers={**ingest, "Content-Type": "text/plain"})
    assert text.status_code == 415
    array = client.post("/api/v1/_noop", json=[{"a": 1}], headers=ingest)
    assert array.status_code == 400 and array.json["error"] == "invalid_body"


def test_it_counts_against_the_keys_rate_limit(make_app):
    client = make_app(api_keys=KEY_ENTRIES, bench_noop=True, rate_limit="2/minute").test_client()
    ingest = bearer(KEYS["ingest"])
    assert [client.post("/api/v1/_noop", json={"a": 1}, headers=ingest).status_code for _ in range(2)] == [202, 202]
    refused = client.post("/api/v1/_noop", json={"a": 1}, headers=ingest)
    assert refused.status_code == 429 and refused.json["error"] == "rate_limited"
