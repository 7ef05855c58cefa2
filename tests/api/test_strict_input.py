"""What the API refuses in its input, with a 400 that says why: a JSON object naming a key twice,
a boolean or a count written as a string, a query parameter its operation does not document, a
job window beyond its bounds, a discard reason over 1,000 characters. Real app, PostgreSQL and
Redis."""

from __future__ import annotations

import uuid

import orjson
import pytest
import sqlalchemy as sa

from etl_app.roles import key_id

from tests.helpers.dead_letters import dead, dead_letter_row
from tests.helpers.payloads import student
from tests.helpers.support import API_KEY

JSON = {"Content-Type": "application/json"}


# -- duplicate keys -----------------------------------------------------------------------------


def test_a_record_naming_a_key_twice_is_refused_with_the_key(client, auth, unique):
    body = f'{{"student_id": "{unique}", "name": "Sam", "name": "Samantha"}}'
    r = client.post("/api/v1/students", data=body, headers={**auth, **JSON})
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["error"] == "invalid_json" and r.get_json()["key"] == "name"
    assert "'name' twice" in r.get_json()["message"]
    assert client.get(f"/api/v1/records/students/{unique}", headers=auth).status_code == 404


def test_a_body_nested_deeper_than_the_duplicate_key_check_walks_is_a_400_not_a_500(client, auth, unique):
    deep = "[" * 1000 + "{}" + "]" * 1000  # valid JSON orjson reads, too deep for Python's decoder
    body = f'{{"student_id": "{unique}", "name": "Sam", "extra": {deep}}}'
    r = client.post("/api/v1/students", data=body, headers={**auth, **JSON})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.get_json()["error"] == "invalid_json" and "nested too deeply" in r.get_json()["message"]
    assert client.get(f"/api/v1/records/students/{unique}", headers=auth).status_code == 404


def test_a_batch_with_a_duplicate_key_deep_inside_is_refused(client, auth, unique):
    records = [orjson.dumps(student(f"{unique}-{i}")).decode() for i in range(3)]
    records[2] = records[2][:-1] + ', "extra": {"a": 1, "a": 2}}'
    r = client.post("/api/v1/students/batch", data="[" + ",".join(records) + "]", headers={**auth, **JSON})
    assert r.status_code == 400 and r.get_json()["key"] == "a"
    assert client.get(f"/api/v1/records/students/{unique}-0", headers=auth).status_code == 404


def test_an_ndjson_line_with_a_duplicate_key_is_rejected_by_its_index(client, auth, unique):
    good = orjson.dumps(student(f"{unique}-0")).decode()
    twice = f'{{"student_id": "{unique}-1", "student_id": "{unique}-2", "name": "Sam"}}'
    r = client.post(
        "/api/v1/students/batch", data=f"{good}\n{twice}\n", headers={**auth, "Content-Type": "application/x-ndjson"}
    )
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    assert body["accepted"] == 1 and body["rejected"] == 1
    assert body["errors"] == [{"index": 1, "errors": {"_line": ["has the key 'student_id' twice in one object"]}}]


def test_an_operator_body_naming_a_filter_twice_is_refused(client, auth, engine, unique):
    accepted, ids = dead(engine, "students", [student(f"{unique}-1")])
    body = f'{{"ingestion_id": "{accepted.ingestion_id}", "ingestion_id": "{uuid.uuid4()}"}}'
    r = client.post("/api/v1/dead-letters/replay", data=body, headers={**auth, **JSON})
    assert r.status_code == 400 and r.get_json()["key"] == "ingestion_id"
    assert dead_letter_row(engine, ids[0]).status == "open"


# -- booleans and counts are JSON booleans and numbers in a JSON body -----------------------------


@pytest.mark.parametrize(
    ("body", "parameter"),
    [({"all": "true"}, "all"), ({"all": 1}, "all"), ({"all": True, "dry_run": "false"}, "dry_run")],
)
def test_bulk_replay_takes_only_json_booleans(client, auth, engine, unique, body, parameter):
    _, ids = dead(engine, "students", [student(f"{unique}-1")])
    r = client.post("/api/v1/dead-letters/replay", json=body, headers=auth)
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["parameter"] == parameter and "JSON true or false" in r.get_json()["message"]
    assert dead_letter_row(engine, ids[0]).status == "open"


def test_bulk_replay_takes_a_json_number_as_limit(client, auth, engine, unique):
    accepted, ids = dead(engine, "students", [student(f"{unique}-1")])
    r = client.post(
        "/api/v1/dead-letters/replay", json={"ingestion_id": str(accepted.ingestion_id), "limit": "1"}, headers=auth
    )
    assert r.status_code == 400 and r.get_json()["parameter"] == "limit"
    assert dead_letter_row(engine, ids[0]).status == "open"
    # as a query string, text is all there is: still read
    r = client.post(f"/api/v1/dead-letters/replay?ingestion_id={accepted.ingestion_id}&all=true&limit=1", headers=auth)
    assert r.status_code == 202 and r.get_json()["replayed"] == 1


@pytest.mark.parametrize("body", [{"dry_run": "true"}, {"limit": "5"}])
def test_a_group_replay_takes_only_json_booleans_and_numbers(client, auth, body):
    r = client.post("/api/v1/dead-letters/groups/0123456789abcdef/replay", json=body, headers=auth)
    assert r.status_code == 400 and r.get_json()["parameter"] == next(iter(body))


# -- query parameters: what the operation documents, nothing else --------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/health"),
        ("get", "/metrics"),
        ("get", "/api/v1/record-types"),
        ("get", "/api/v1/records/students/nobody"),
        ("get", f"/api/v1/ingestions/{uuid.uuid4()}"),
        ("get", "/api/v1/jobs"),
        ("get", "/api/v1/jobs/retention"),
        ("post", "/api/v1/jobs/retention/run"),
        ("get", "/api/v1/dead-letters/1"),
        ("post", "/api/v1/dead-letters/1/discard"),
        ("post", "/api/v1/students"),
        ("get", "/api/v1/providers"),
    ],
)
def test_a_query_parameter_the_operation_does_not_document_is_a_400(client, auth, method, path):
    r = getattr(client, method)(path, query_string={"verbose": "1"}, headers=auth)
    assert r.status_code == 400, (path, r.status_code, r.get_json())
    assert r.get_json()["error"] == "invalid_parameter" and r.get_json()["parameter"] == "verbose"


def test_documented_query_parameters_still_work(client, auth):
    assert client.get("/api/v1/dead-letters", query_string={"limit": "1"}, headers=auth).status_code == 200
    r = client.post("/api/v1/jobs/tutor-rollups/run", query_string={"from": "2026-01-01"}, headers=auth)
    assert r.status_code == 202, r.get_json()


# -- job windows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"from": "9999-12-31"}, "from must be a day from 1970-01-01 to 2100-12-31"),
        ({"from": "0001-01-01", "to": "0001-01-02"}, "from must be a day from"),
        ({"from": "2026-01-01", "to": "9999-12-31"}, "to must be a day from"),
        ({"from": "2024-01-01", "to": "2025-01-01"}, "covers 367 days, over the limit of 366"),
    ],
)
def test_a_job_window_beyond_its_bounds_is_a_400(client, auth, body, says):
    r = client.post("/api/v1/jobs/tutor-rollups/run", json=body, headers=auth)
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["error"] == "invalid_window" and says in r.get_json()["message"]


def test_the_longest_window_is_a_setting(make_app, auth):
    client = make_app(job_max_window_days=3).test_client()
    r = client.post("/api/v1/jobs/tutor-rollups/run", json={"from": "2026-01-01", "to": "2026-01-04"}, headers=auth)
    assert r.status_code == 400 and "over the limit of 3" in r.get_json()["message"]
    r = client.post("/api/v1/jobs/tutor-rollups/run", json={"from": "2026-01-01", "to": "2026-01-03"}, headers=auth)
    assert r.status_code == 202


# -- discard reasons ----------------------------------------------------------------------------


def test_a_discard_reason_over_1000_characters_is_refused(client, auth, engine, unique):
    _, ids = dead(engine, "students", [student(f"{unique}-1")])
    r = client.post(f"/api/v1/dead-letters/{ids[0]}/discard", json={"reason": "x" * 1001}, headers=auth)
    assert r.status_code == 400 and r.get_json()["parameter"] == "reason"
    assert dead_letter_row(engine, ids[0]).status == "open"
    r = client.post(f"/api/v1/dead-letters/{ids[0]}/discard", json={"reason": "duplicate of S1"}, headers=auth)
    assert r.status_code == 200 and dead_letter_row(engine, ids[0]).status == "discarded"
    with engine.connect() as conn:
        target = conn.execute(
            sa.text("SELECT target FROM audit WHERE action = 'discard' AND key_id = :k ORDER BY id DESC LIMIT 1"),
            {"k": key_id(API_KEY)},
        ).scalar_one()
    assert target == {"dead_letter_id": ids[0], "reason": "duplicate of S1"}


def test_the_document_states_the_bounds(client, auth):
    paths = client.get("/openapi.json", headers=auth).get_json()["paths"]
    for path in ("/api/v1/dead-letters/{id}/discard", "/api/v1/dead-letters/groups/{group}/discard"):
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["properties"]["reason"]["maxLength"] == 1000, path
