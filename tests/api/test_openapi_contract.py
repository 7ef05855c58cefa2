"""The OpenAPI document as a contract: typed and bounded record fields, a schema on every answer,
the shared 401/403/429/503 answers, a /docs that needs no internet, and 405 with ``Allow``."""

from __future__ import annotations

import re

import pytest

from etl_app.api.spec import SHARED


@pytest.fixture
def spec(client, auth):
    return client.get("/openapi.json", headers=auth).get_json()


def _record_schemas(spec):
    return {name: s for name, s in spec["components"]["schemas"].items() if name.endswith("Schema")}


def test_every_record_field_is_typed_and_bounded(spec):
    schemas = _record_schemas(spec)
    assert {"TutorSchema", "SessionSchema", "FeedbackSchema", "StudentSchema"} <= set(schemas)
    for name, schema in schemas.items():
        for field, prop in schema["properties"].items():
            where = f"{name}.{field}"
            assert "type" in prop, where
            assert not any(k.startswith("x-") for k in prop), where
            if prop["type"] == "string":
                assert prop.get("maxLength"), where
            if prop["type"] == "array":
                assert prop.get("maxItems") and prop["items"].get("maxLength"), where
    tutor = schemas["TutorSchema"]["properties"]
    assert tutor["age"] == {**tutor["age"], "type": "integer", "minimum": 16, "maximum": 100}
    assert tutor["email"]["format"] == "email" and tutor["email"]["maxLength"] == 254
    assert tutor["onboarding_date"]["format"] == "date"
    formats = [tutor["updated_at"].get("format"), *(alt.get("format") for alt in tutor["updated_at"].get("anyOf", []))]
    assert "date-time" in formats  # optional: beside an empty string, which is absent
    assert tutor["subjects"]["minItems"] == 1 and tutor["subjects"]["maxItems"] == 20
    assert tutor["status"]["enum"] == ["active", "inactive", "on_leave", "churned"]
    assert re.fullmatch(tutor["tutor_id"]["pattern"], "T-1") and not re.fullmatch(tutor["tutor_id"]["pattern"], "a b")


def test_every_answer_has_a_schema_and_the_shared_ones(spec):
    shared = spec["components"]["responses"]
    assert {s["name"] for s in SHARED.values()} <= set(shared)
    assert "Retry-After" in shared["RateLimited"]["headers"]
    assert "/api/v1/audit" in spec["paths"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            answers = operation["responses"]
            if operation.get("security"):
                assert {"401", "403", "429", "503"} <= set(answers), f"{method} {path}"
            for code, answer in answers.items():
                assert "$ref" in answer or any("schema" in c for c in answer["content"].values()), (
                    f"{method} {path} {code}"
                )


def test_an_oversized_string_or_list_is_a_field_error(client, auth):
    from tests.helpers.payloads import tutor

    long_name = client.post("/api/v1/tutors", headers=auth, json=tutor("T-long", name="x" * 201))
    assert long_name.status_code == 422 and "name" in long_name.get_json()["errors"]
    many = client.post("/api/v1/tutors", headers=auth, json=tutor("T-many", subjects=[f"s{i}" for i in range(21)]))
    assert many.status_code == 422 and "subjects" in many.get_json()["errors"]
    long_item = client.post("/api/v1/tutors", headers=auth, json=tutor("T-item", subjects=["y" * 101]))
    assert long_item.status_code == 422 and "subjects.0" in long_item.get_json()["errors"]


def test_docs_loads_its_assets_from_the_app(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert not re.search(r"""(src|href)=["']https?://""", html)
    assets = re.findall(r"""<(?:script|link)[^>]*(?:src|href)=["'](/[^"']+)["']""", html)
    assert "/docs/assets/swagger-ui-bundle.js" in assets and "/docs/assets/swagger-ui.css" in assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert client.get("/docs/assets/../openapi.py").status_code == 404


def test_docs_cannot_be_framed_and_keeps_the_key_for_the_tab_only(client):
    page = client.get("/docs")
    assert page.headers["X-Frame-Options"] == "DENY"
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    html = page.get_data(as_text=True)
    assert not re.search(r"<script>", html)  # no inline script: all of it in /docs/assets/docs.js
    assert re.search(r'<button[^>]*id="change-key"', html) and re.search(r'<button[^>]*id="forget-key"', html)
    script = client.get("/docs/assets/docs.js")
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    js = script.get_data(as_text=True)
    assert "sessionStorage.setItem(STORE" in js and "sessionStorage.removeItem(STORE)" in js
    assert "localStorage.setItem" not in js and "localStorage.getItem" not in js
    assert "localStorage.removeItem(STORE)" in js  # a key an earlier version kept for good is dropped


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/swagger-ui.css",
        "/openapi.json",
        "/api/v1/record-types",
        "/health",
        "/ui/signin",
        "/api/v1/nowhere",
    ],
)
def test_no_answer_of_the_app_may_be_framed(client, auth, path):
    r = client.get(path, headers=auth)
    assert r.headers["X-Frame-Options"] == "DENY", path
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"], path


def test_a_method_not_served_is_405_with_allow(client, auth):
    refused = client.post("/api/v1/dead-letters", headers=auth, json={})
    assert refused.status_code == 405 and "GET" in refused.headers["Allow"]
    assert refused.get_json()["error"] == "method_not_allowed"
    trace = client.open("/api/v1/tutors", method="TRACE", headers=auth)
    assert trace.status_code == 405 and "POST" in trace.headers["Allow"]
    assert client.post("/api/v1/no-such-type", headers=auth, json={}).status_code == 404


def test_paging_cursors_and_closed_bodies_are_documented_as_the_server_reads_them(client, auth, spec):
    """A cursor is an integer from 1 (a string cursor is a 400), and the bodies that refuse unknown
    fields say so (additionalProperties false), so a client or fuzzer built from the document
    sends what the server takes."""
    for path in ("/api/v1/dead-letters", "/api/v1/audit"):
        (cursor,) = [p for p in spec["paths"][path]["get"]["parameters"] if p.get("name") == "cursor"]
        assert cursor["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}, path
        assert client.get(f"{path}?cursor=abc", headers=auth).status_code == 400
    for path in ("/api/v1/dead-letters/{id}/replay", "/api/v1/jobs/{name}/run"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["additionalProperties"] is False, path
    answer = client.post("/api/v1/jobs/retention/run", json={"fro": "2026-01-01"}, headers=auth)
    assert answer.status_code == 400, answer.get_json()


def test_parameters_are_read_as_strictly_as_they_are_documented(client, auth):
    """Empty values, unknown names, integers that only Python's int() would read, and a null
    flag are refused (400), as the document says; before, each was quietly taken as absent or
    read loosely."""
    refused = [
        client.get("/api/v1/dead-letters?record_type=", headers=auth),
        client.get("/api/v1/dead-letters?cursor=%D9%A5", headers=auth),  # an Arabic-Indic five
        client.get("/api/v1/dead-letters?limit=+5", headers=auth),
        client.get("/api/v1/audit?key_id=", headers=auth),
        client.get("/api/v1/audit?key_id=k-%00", headers=auth),  # PostgreSQL refuses NUL: was a 500
        client.get("/api/v1/quality/students?from=", headers=auth),
        client.get("/api/v1/quality/students?days=7", headers=auth),
        client.post("/api/v1/dead-letters/replay", json={"record_type": "students", "all": None}, headers=auth),
    ]
    assert [r.status_code for r in refused] == [400] * len(refused), [r.get_json() for r in refused]
    assert {r.get_json()["error"] for r in refused} == {"invalid_parameter"}
    assert client.get("/api/v1/dead-letters?limit=5", headers=auth).status_code == 200
    for path in ("/api/v1/records/tutors/T%001", "/api/v1/tutors/T%001/metrics"):  # were 500s
        answer = client.get(path, headers=auth)
        assert (answer.status_code, answer.get_json()["error"]) == (404, "not_found"), path


def test_every_api_rule_is_documented_with_the_methods_it_serves(app, client, auth, spec):
    """The document is read from the URL map (etl_app.api.spec): every API rule is a path with the
    methods it routes, and OPTIONS (like a 405's ``Allow``) names those methods and no other."""
    from etl_app.api.rights import ENDPOINT_RIGHTS
    from etl_app.api.spec import openapi_path

    endpoints = (set(ENDPOINT_RIGHTS) - {"openapi.openapi_json"}) | {"health.health", "health.ready"}
    names = app.extensions["etl"].registry.names()
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint in endpoints]
    assert {rule.endpoint for rule in rules} == endpoints
    for rule in rules:
        path = openapi_path(rule.rule)
        paths = [path.replace("{record_type}", name) for name in names] if path.startswith("/api/v1/{") else [path]
        for documented in paths:
            served = {m.lower() for m in rule.methods - {"HEAD", "OPTIONS"}}
            assert served <= set(spec["paths"][documented]), (rule.rule, documented)
    for path, operations in spec["paths"].items():
        if "{" in path:
            continue
        allow = client.options(path, headers=auth).headers["Allow"]
        advertised = {m.strip().lower() for m in allow.split(",")} - {"head", "options"}
        assert advertised == set(operations), (path, allow)


def test_submits_and_uploads_document_their_429_with_retry_after(spec):
    busy = spec["components"]["responses"]["Busy"]
    assert "Retry-After" in busy["headers"] and "backlog_full" in busy["description"]
    for path in ("/api/v1/tutors", "/api/v1/tutors/batch", "/api/v1/students/upload"):
        assert spec["paths"][path]["post"]["responses"]["429"] == {"$ref": "#/components/responses/Busy"}, path
    assert spec["paths"]["/api/v1/record-types"]["get"]["responses"]["429"]["$ref"].endswith("/RateLimited")
    ready = spec["paths"]["/ready"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "backlog" in ready["properties"]
