"""What every API request passes before and after its view, as answers show it: the request id
(etl_app.api.requestlog), the key and its right (etl_app.api.auth), the NUL and query checks
(etl_app.api), the pages' session left unopened (etl_app.ui.session)."""

from __future__ import annotations

import re

from etl_app.roles import ApiKey

from tests.api.test_roles import KEYS, bearer
from tests.helpers.support import API_KEY

KEY_ENTRIES = (API_KEY, *(f"{key}:{role}" for role, key in KEYS.items()))
NOOP = "/api/v1/_noop"


def _client(make_app, **settings):
    return make_app(api_keys=KEY_ENTRIES, bench_noop=True, **settings).test_client()


def test_a_request_id_sent_well_formed_is_answered_and_any_other_replaced_by_a_new_one(make_app):
    client = _client(make_app)
    ingest = bearer(KEYS["ingest"])
    sent = client.post(NOOP, json={"a": 1}, headers={**ingest, "X-Request-ID": "client-id:42.a_b"})
    assert sent.status_code == 202 and sent.headers["X-Request-ID"] == "client-id:42.a_b"
    made = [
        client.post(NOOP, json={"a": 1}, headers={**ingest, **extra}).headers["X-Request-ID"]
        for extra in ({}, {}, {"X-Request-ID": "has space"}, {"X-Request-ID": "x" * 129}, {"X-Request-ID": ""})
    ]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made)
    assert len(set(made)) == len(made)
    # refused requests have one too
    assert re.fullmatch(r"[0-9a-f]{32}", client.post(NOOP, json={"a": 1}).headers["X-Request-ID"])


def test_open_endpoints_need_no_key_and_a_metrics_key_opens_only_metrics(make_app):
    metrics_key = "metrics-only-key-123"
    client = _client(make_app, metrics_keys=(metrics_key,))
    assert client.get("/health").status_code == 200
    assert client.get("/metrics", headers=bearer(metrics_key)).status_code == 200
    refused = client.post(NOOP, json={"a": 1}, headers=bearer(metrics_key))
    assert refused.status_code == 401 and refused.json["error"] == "unauthorized"
    assert client.get("/api/v1/record-types", headers=bearer(metrics_key)).status_code == 401
    assert client.get("/api/v1/record-types", headers=bearer(KEYS["reader"])).status_code == 200
    assert client.post(NOOP, json={"a": 1}, headers=bearer(KEYS["reader"])).status_code == 403


def test_a_query_string_is_still_checked_for_nul_and_undeclared_parameters(make_app):
    client = _client(make_app)
    reader = bearer(KEYS["reader"])
    assert client.get("/api/v1/record-types", headers=reader).status_code == 200
    nul = client.get("/api/v1/dead-letters?record_type=a%00b", headers=reader)
    assert nul.status_code == 400 and nul.json["error"] == "invalid_parameter"
    unknown = client.get("/api/v1/dead-letters?recordtype=students", headers=reader)
    assert unknown.status_code == 400 and "recordtype" in unknown.json["message"]


def test_an_api_request_with_cookies_but_no_session_cookie_is_served_and_sets_none(make_app):
    client = _client(make_app)
    client.set_cookie("other", "value")
    r = client.post(NOOP, json={"a": 1}, headers=bearer(KEYS["ingest"]))
    assert r.status_code == 202 and "Set-Cookie" not in r.headers


def test_a_keys_id_is_the_same_each_time_and_no_part_of_its_equality():
    key = ApiKey("a-secret-value", "reader")
    assert key.id == key.id == ApiKey("a-secret-value", "reader").id
    assert key == ApiKey("a-secret-value", "reader") and hash(key) == hash(ApiKey("a-secret-value", "reader"))
    assert "a-secret-value" not in repr(key)
