"""Rate limits per API key (ETL_RATE_LIMIT), counted in Redis under the broker key prefix."""

from __future__ import annotations

import redis

from etl_app.roles import key_id

from tests.helpers.support import API_KEY

OTHER_KEY = "other-key-for-rate-limits"


def test_the_fourth_request_in_the_window_is_429_with_retry_after(make_app, auth):
    client = make_app(rate_limit="3/minute").test_client()
    answers = [client.get("/api/v1/record-types", headers=auth) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    refused = answers[3]
    assert refused.get_json()["error"] == "rate_limited"
    assert "3 per 1 minute" in refused.get_json()["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_each_key_has_its_own_budget_counted_by_key_id(make_app, auth, api_redis_url, broker_prefix):
    client = make_app(rate_limit="3/minute", api_keys=(API_KEY, OTHER_KEY)).test_client()
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    assert [client.get("/api/v1/record-types", headers=auth).status_code for _ in range(4)] == [200] * 3 + [429]
    assert [client.get("/api/v1/record-types", headers=other).status_code for _ in range(3)] == [200] * 3
    assert client.get("/api/v1/record-types", headers=other).status_code == 429
    # the counters are under this deployment's prefix and named by key id, never by the key
    keys = [k.decode() for k in redis.Redis.from_url(api_redis_url).scan_iter(f"{broker_prefix}ratelimit*")]
    assert keys and all(API_KEY not in k and OTHER_KEY not in k for k in keys)
    assert any(key_id(API_KEY) in k for k in keys) and any(key_id(OTHER_KEY) in k for k in keys)


def test_health_ready_and_refused_requests_are_never_limited(make_app, auth):
    client = make_app(rate_limit="1/minute").test_client()
    assert all(client.get("/health").status_code == 200 for _ in range(5))
    assert all(client.get("/ready").status_code in (200, 503) for _ in range(5))
    assert all(client.get("/api/v1/record-types").status_code == 401 for _ in range(3))
    assert client.get("/api/v1/record-types", headers=auth).status_code == 200


def test_without_etl_rate_limit_there_is_no_limit(make_app, auth):
    client = make_app().test_client()
    assert all(client.get("/api/v1/record-types", headers=auth).status_code == 200 for _ in range(20))


def test_a_redis_that_is_down_never_turns_requests_into_errors(make_app, auth):
    client = make_app(rate_limit="3/minute", redis_url="redis://127.0.0.1:1/0").test_client()
    codes = [client.get("/api/v1/record-types", headers=auth).status_code for _ in range(5)]
    assert 500 not in codes and codes[0] == 200
    assert codes[3:] == [429, 429]  # counted in memory meanwhile


def test_a_malformed_rate_limit_stops_the_service_at_start():
    import pytest

    from etl_app.config import Settings

    with pytest.raises(ValueError, match="ETL_RATE_LIMIT"):
        Settings.from_env({"ETL_RATE_LIMIT": "lots"})


# -- refused requests count, and their audit rows stay few --------------------------------------


def _refusals(engine, key: str, action: str) -> list[dict]:
    import sqlalchemy as sa

    with engine.connect() as conn:
        query = sa.text(
            "SELECT occurrences, first_at, at, outcome, target FROM audit "
            "WHERE key_id = :k AND action = :a AND outcome = 'refused' ORDER BY id"
        )
        return [dict(r) for r in conn.execute(query, {"k": key_id(key), "a": action}).mappings()]


def test_refused_requests_use_up_the_keys_rate_limit_and_are_audited_in_one_counted_row(make_app, engine, unique):
    from tests.helpers.dead_letters import dead
    from tests.helpers.payloads import student

    reader = f"reader-{unique}"
    client = make_app(rate_limit="5/minute", api_keys=(API_KEY, f"{reader}:reader")).test_client()
    _, [dl_id] = dead(engine, "students", [student(unique)])
    headers = {"Authorization": f"Bearer {reader}"}
    codes = [client.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=headers).status_code for _ in range(12)]
    assert codes == [403] * 5 + [429] * 7
    rows = _refusals(engine, reader, "replay")
    assert 1 <= len(rows) <= 2  # one a minute (two if the burst straddled a minute)
    assert sum(r["occurrences"] for r in rows) == 5
    assert all(r["first_at"] <= r["at"] for r in rows)


def test_a_flood_of_refusals_is_one_audit_row_with_its_count_shown_by_the_api_and_cli(
    make_app, engine, unique, make_cli
):
    from tests.helpers.dead_letters import dead
    from tests.helpers.payloads import student

    reader = f"reader-{unique}"
    client = make_app(api_keys=(API_KEY, f"{reader}:reader")).test_client()
    _, [dl_id] = dead(engine, "students", [student(unique)])
    headers = {"Authorization": f"Bearer {reader}"}
    assert all(client.delete(f"/api/v1/dead-letters/{dl_id}", headers=headers).status_code == 403 for _ in range(60))
    rows = _refusals(engine, reader, "discard")
    assert 1 <= len(rows) <= 2 and sum(r["occurrences"] for r in rows) == 60
    listed = client.get(
        "/api/v1/audit", query_string={"key_id": key_id(reader)}, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert listed.status_code == 200, listed.get_json()
    entries = listed.get_json()["audit"]
    assert sum(e["occurrences"] for e in entries) == 60 and all(e["first_at"] <= e["at"] for e in entries)
    result = make_cli(COLUMNS="250")("audit", "--key-id", key_id(reader))
    assert result.exit_code == 0, result.output
    assert "times" in result.output and any(str(r["occurrences"]) in result.output for r in rows)
