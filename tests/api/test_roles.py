"""Roles of API keys (etl_app.roles, etl_app.api.rights) and the audit trail (etl_app.audit)."""

from __future__ import annotations

import base64
import json
import uuid
from types import SimpleNamespace

import pytest
import redis
import sqlalchemy as sa

from etl_app.api.rights import ENDPOINT_RIGHTS, OPEN_ENDPOINTS
from etl_app.config import Settings
from etl_app.roles import key_id, parse_key, parse_keys

from tests.helpers.dead_letters import dead
from tests.helpers.payloads import student
from tests.helpers.support import API_KEY

KEYS = {role: f"{role}-key-{uuid.uuid4().hex[:8]}" for role in ("ingest", "reader", "operator")}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def roles_app(make_app):
    # API_KEY has no role: admin, as configurations from before roles say
    return make_app(api_keys=(API_KEY, *(f"{key}:{role}" for role, key in KEYS.items())))


@pytest.fixture
def rclient(roles_app):
    return roles_app.test_client()


@pytest.fixture
def cli(make_cli):
    return make_cli(COLUMNS="250")


def audit_rows(engine, **where) -> list[dict]:
    clauses = " AND ".join(f"{name} = :{name}" for name in where) or "true"
    with engine.connect() as conn:
        return [
            dict(r) for r in conn.execute(sa.text(f"SELECT * FROM audit WHERE {clauses} ORDER BY id"), where).mappings()
        ]


def assert_no_raw_key(engine) -> None:
    """No raw key, of any role, is anywhere in the audit table."""
    with engine.connect() as conn:
        text = "\n".join(conn.execute(sa.text("SELECT audit::text FROM audit")).scalars())
    for key in (API_KEY, *KEYS.values()):
        assert key not in text


# -- configuration ----------------------------------------------------------------------------


def test_keys_parse_with_their_roles_and_a_bare_key_is_admin():
    keys = parse_keys(["a1", "b2:reader", " c3:operator ", "d4:ingest", "e5:admin"])
    assert [(k.secret, k.role) for k in keys] == [
        ("a1", "admin"),
        ("b2", "reader"),
        ("c3", "operator"),
        ("d4", "ingest"),
        ("e5", "admin"),
    ]
    assert keys[0].id == key_id("a1") and keys[0].id.startswith("k-") and len(keys[0].id) == 10
    assert "a1" not in repr(keys[0])
    with pytest.raises(ValueError, match="unknown role 'opertor'") as info:
        parse_key("secret-key:opertor")
    assert "secret-key" not in str(info.value)
    with pytest.raises(ValueError, match="unknown role"):
        Settings.from_env({"ETL_API_KEYS": "k1:reader,k2:boss", "DATABASE_URL": "x"})


# -- rights -----------------------------------------------------------------------------------


def test_every_api_endpoint_declares_its_right(app):
    # the pages (ui.*) check a session of their own: tests/ui/test_ui.py
    rules = [
        r for r in app.url_map.iter_rules() if r.endpoint not in OPEN_ENDPOINTS and not r.endpoint.startswith("ui.")
    ]
    missing = sorted({r.rule for r in rules if r.rule.startswith("/api/v1") and r.endpoint not in ENDPOINT_RIGHTS})
    assert missing == [], f"endpoints without a declared right in etl_app/api/rights.py: {missing}"
    undeclared = sorted({r.endpoint for r in rules} - set(ENDPOINT_RIGHTS))
    assert undeclared == [], undeclared
    stale = sorted(set(ENDPOINT_RIGHTS) - {r.endpoint for r in app.url_map.iter_rules()})
    assert stale == [], f"rights declared for endpoints that do not exist: {stale}"


def test_a_key_whose_role_lacks_the_right_is_forbidden(rclient, engine, unique):
    _, [dl_id] = dead(engine, "students", [student(unique)])
    # reader: every GET, nothing else
    r = rclient.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=bearer(KEYS["reader"]))
    assert r.status_code == 403 and r.json["error"] == "forbidden" and r.json["message"]
    assert (
        rclient.post("/api/v1/students", json=student(unique + "x"), headers=bearer(KEYS["reader"])).status_code == 403
    )
    assert rclient.post("/api/v1/jobs/retention/run", headers=bearer(KEYS["reader"])).status_code == 403
    assert rclient.get(f"/api/v1/dead-letters/{dl_id}", headers=bearer(KEYS["reader"])).status_code == 200
    assert rclient.get("/metrics", headers=bearer(KEYS["reader"])).status_code == 200
    # ingest: submit only
    for path in (f"/api/v1/dead-letters/{dl_id}", "/api/v1/dead-letters", "/api/v1/audit", "/api/v1/jobs", "/metrics"):
        r = rclient.get(path, headers=bearer(KEYS["ingest"]))
        assert r.status_code == 403 and r.json["error"] == "forbidden", path
    assert (
        rclient.post("/api/v1/students", json=student(unique + "i"), headers=bearer(KEYS["ingest"])).status_code == 202
    )
    assert rclient.delete(f"/api/v1/dead-letters/{dl_id}", headers=bearer(KEYS["ingest"])).status_code == 403
    # operator: reads, replays, discards, runs jobs; does not submit
    assert (
        rclient.post("/api/v1/students", json=student(unique + "o"), headers=bearer(KEYS["operator"])).status_code
        == 403
    )
    # a wrong key stays 401
    assert rclient.get("/api/v1/dead-letters", headers=bearer("nope")).status_code == 401
    # the refused replay is in the audit trail, by key id
    [refused] = [
        e
        for e in audit_rows(engine, outcome="refused")
        if e["target"].get("dead_letter_id") == dl_id and e["action"] == "replay"
    ]
    assert refused["key_id"] == key_id(KEYS["reader"])
    assert_no_raw_key(engine)


def test_metrics_key_reads_metrics_only(make_app):
    client = make_app(api_keys=(f"{KEYS['reader']}:reader",), metrics_keys=("scrape-key",)).test_client()
    assert client.get("/metrics", headers=bearer("scrape-key")).status_code == 200
    assert client.get("/api/v1/dead-letters", headers=bearer("scrape-key")).status_code == 401


# -- the audit trail --------------------------------------------------------------------------


def test_replay_edit_discard_by_api_are_audited_by_key_id(rclient, engine, unique):
    op = bearer(KEYS["operator"])
    _, ids = dead(engine, "students", [student(f"{unique}-{i}") for i in range(4)])
    r = rclient.post(f"/api/v1/dead-letters/{ids[0]}/replay", headers={**op, "X-Request-ID": f"req-{unique}"})
    assert r.status_code == 202, r.json
    r = rclient.post(f"/api/v1/dead-letters/{ids[1]}/replay", json={"payload": student(f"{unique}-1")}, headers=op)
    assert r.status_code == 202, r.json
    assert rclient.post(f"/api/v1/dead-letters/{ids[2]}/discard", headers=op).status_code == 200
    # a failed action is audited too: not open any more
    assert rclient.post(f"/api/v1/dead-letters/{ids[0]}/replay", headers=op).status_code == 409
    ingestion = str(_ingestion(engine, ids[3]))
    r = rclient.post("/api/v1/dead-letters/replay", json={"ingestion_id": ingestion}, headers=op)
    assert r.status_code == 202 and r.json["replayed"] == 1, r.json

    r = rclient.get("/api/v1/audit", query_string={"key_id": key_id(KEYS["operator"]), "limit": 500}, headers=op)
    assert r.status_code == 200, r.json
    mine = [e for e in r.json["audit"] if _touches(e, ids, ingestion)]
    got = [(e["action"], e["target"].get("dead_letter_id"), e["count"], e["outcome"]) for e in reversed(mine)]
    assert got == [
        ("replay", ids[0], 1, "ok"),
        ("edit", ids[1], 1, "ok"),
        ("discard", ids[2], 1, "ok"),
        ("replay", ids[0], None, "failed"),
        ("bulk_replay", None, 1, "ok"),
    ]
    assert mine[-1]["request_id"] == f"req-{unique}" and "NotOpen" in mine[1]["message"]
    assert {e["key_id"] for e in mine} == {key_id(KEYS["operator"])}
    # filters and paging
    page = rclient.get("/api/v1/audit", query_string={"action": "edit", "limit": 1}, headers=bearer(KEYS["reader"]))
    assert page.status_code == 200 and len(page.json["audit"]) == 1 and page.json["audit"][0]["action"] == "edit"
    assert rclient.get("/api/v1/audit?action=nope", headers=op).status_code == 400
    assert rclient.get("/api/v1/audit?since=2999-01-01T00:00:00Z", headers=op).json["audit"] == []
    assert_no_raw_key(engine)


def _ingestion(engine, dl_id: int) -> uuid.UUID:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT ingestion_id FROM dead_letters WHERE id = :id"), {"id": dl_id}).scalar_one()


def _touches(entry: dict, ids: list[int], ingestion: str) -> bool:
    target = entry["target"]
    return target.get("dead_letter_id") in ids or target.get("filters", {}).get("ingestion_id") == ingestion


def test_job_runs_by_api_and_cli_are_audited(rclient, roles_app, engine, api_redis_url, broker_prefix, cli):
    import tasks.beat

    r = rclient.post("/api/v1/jobs/retention/run", headers=bearer(KEYS["operator"]))
    assert r.status_code == 202, r.json
    task_id = r.json["task_id"]
    queued = [json.loads(m) for m in redis.Redis.from_url(api_redis_url).lrange(f"{broker_prefix}jobs", 0, -1)]
    [message] = [m for m in queued if m["headers"]["id"] == task_id]
    _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert kwargs["actor"] == key_id(KEYS["operator"]) and KEYS["operator"] not in json.dumps(message)
    # what the worker does with the message
    task = SimpleNamespace(runtime=roles_app.extensions["etl"], request=SimpleNamespace(id=task_id))
    tasks.beat._run(task, "retention", **kwargs)

    result = cli("jobs", "run", "retention")
    assert result.exit_code == 0, result.output

    runs = [e for e in audit_rows(engine, action="job_run") if e["target"].get("job") == "retention"]
    by_api = [e for e in runs if e["key_id"] == key_id(KEYS["operator"])]
    assert len(by_api) == 1 and by_api[0]["outcome"] == "ok" and by_api[0]["target"]["trigger"] == "api"
    assert any(e["key_id"] == "cli" and e["target"]["trigger"] == "cli" and e["outcome"] == "ok" for e in runs)
    listed = rclient.get("/api/v1/audit?action=job_run&limit=500", headers=bearer(KEYS["reader"])).json["audit"]
    assert by_api[0]["id"] in {e["id"] for e in listed}
    assert_no_raw_key(engine)


def test_cli_replay_edit_discard_are_audited_as_cli(cli, engine, unique, tmp_path):
    _, ids = dead(engine, "students", [student(f"{unique}-{i}") for i in range(3)])
    assert cli("dlq", "replay", str(ids[0])).exit_code == 0
    payload = tmp_path / "fixed.json"
    payload.write_text(json.dumps(student(f"{unique}-1")))
    assert cli("dlq", "replay", str(ids[1]), "--payload-file", str(payload)).exit_code == 0
    assert cli("dlq", "discard", str(ids[2])).exit_code == 0
    rows = [e for e in audit_rows(engine, key_id="cli") if e["target"].get("dead_letter_id") in ids]
    assert [(e["action"], e["target"]["dead_letter_id"], e["outcome"]) for e in rows] == [
        ("replay", ids[0], "ok"),
        ("edit", ids[1], "ok"),
        ("discard", ids[2], "ok"),
    ]
    out = cli("audit", "--limit", "500", "--action", "edit")
    assert out.exit_code == 0 and str(ids[1]) in out.output and "discard" not in out.output
