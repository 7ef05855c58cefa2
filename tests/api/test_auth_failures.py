"""Failed authentication is throttled per client address (etl_app.web.authfail): wrong keys on the
API and wrong keys on the pages' sign-in form, counted in Redis under the broker key prefix."""

from __future__ import annotations

import pytest
import redis

from etl_app.web import authfail

from tests.helpers.support import API_KEY
from tests.helpers.ui import sign_in

ATTACKER = {"REMOTE_ADDR": "203.0.113.7"}
ELSEWHERE = {"REMOTE_ADDR": "198.51.100.20"}


@pytest.fixture
def one_window(monkeypatch):
    """Every request of the test in one and the same minute, with 42 s left in it."""
    monkeypatch.setattr(authfail, "_now", lambda: (1_000_000, 42))


def wrong(n: int) -> dict[str, str]:
    return {"Authorization": f"Bearer wrong-key-{n}"}


def test_past_the_budget_an_address_gets_429_with_retry_after_and_others_are_untouched(
    make_app, one_window, api_redis_url, broker_prefix
):
    client = make_app(auth_failures_per_minute=5).test_client()
    codes = [client.get("/api/v1/record-types", headers=wrong(i), environ_base=ATTACKER).status_code for i in range(6)]
    assert codes == [401] * 5 + [429]
    refused = client.get("/api/v1/record-types", headers=wrong(9), environ_base=ATTACKER)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "42"
    assert refused.get_json()["error"] == "too_many_failed_authentications"
    # the right key from that address waits too (no answer tells a right guess from a wrong one)
    right = {"Authorization": f"Bearer {API_KEY}"}
    assert client.get("/api/v1/record-types", headers=right, environ_base=ATTACKER).status_code == 429
    # from another address the right key works, and a wrong one is a plain 401
    assert client.get("/api/v1/record-types", headers=right, environ_base=ELSEWHERE).status_code == 200
    assert client.get("/api/v1/record-types", headers=wrong(0), environ_base=ELSEWHERE).status_code == 401
    # open endpoints stay open
    assert client.get("/health", environ_base=ATTACKER).status_code == 200
    # counted by address under this deployment's prefix, never naming a key
    keys = [k.decode() for k in redis.Redis.from_url(api_redis_url).scan_iter(f"{broker_prefix}authfail:*")]
    assert any("203.0.113.7" in k for k in keys) and not any("wrong-key" in k for k in keys)


def test_successful_authentications_count_nothing(make_app, one_window):
    client = make_app(auth_failures_per_minute=2).test_client()
    right = {"Authorization": f"Bearer {API_KEY}"}
    assert all(
        client.get("/api/v1/record-types", headers=right, environ_base=ATTACKER).status_code == 200 for _ in range(10)
    )
    assert client.get("/api/v1/record-types", headers=wrong(1), environ_base=ATTACKER).status_code == 401


def test_wrong_keys_on_the_sign_in_form_are_throttled_too(make_app, one_window):
    app = make_app(auth_failures_per_minute=3)
    attacker = app.test_client()
    attacker.environ_base.update(ATTACKER)
    assert [sign_in(attacker, f"guess-{i}").status_code for i in range(3)] == [401] * 3
    r = sign_in(attacker, "guess-4")
    assert r.status_code == 429 and r.headers["Retry-After"] == "42"
    assert "Too many failed sign-ins" in r.get_data(as_text=True)
    assert sign_in(attacker, API_KEY).status_code == 429  # the right key waits too
    # the API counts the same failures: that address is throttled there as well
    right = {"Authorization": f"Bearer {API_KEY}"}
    assert attacker.get("/api/v1/record-types", headers=right).status_code == 429
    # another address signs in
    operator = app.test_client()
    operator.environ_base.update(ELSEWHERE)
    assert sign_in(operator, API_KEY).status_code == 302
    assert operator.get("/ui/jobs").status_code == 200


def test_zero_turns_the_throttle_off(make_app, one_window):
    client = make_app(auth_failures_per_minute=0).test_client()
    assert all(
        client.get("/api/v1/record-types", headers=wrong(i), environ_base=ATTACKER).status_code == 401
        for i in range(30)
    )


def test_a_redis_that_is_down_lets_authentication_through(make_app, one_window):
    client = make_app(auth_failures_per_minute=1, redis_url="redis://127.0.0.1:1/0").test_client()
    assert [client.get("/api/v1/record-types", headers=wrong(i)).status_code for i in range(3)] == [401] * 3
    assert client.get("/api/v1/record-types", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_behind_trusted_proxies_the_forwarded_client_address_is_counted(make_app, one_window):
    client = make_app(auth_failures_per_minute=2, proxy_hops=1).test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.1"}

    def via_proxy(client_address: str, headers: dict[str, str]) -> int:
        forwarded = {**headers, "X-Forwarded-For": client_address}
        return client.get("/api/v1/record-types", headers=forwarded, environ_base=proxy).status_code

    assert [via_proxy("203.0.113.7", wrong(i)) for i in range(3)] == [401, 401, 429]
    assert via_proxy("198.51.100.20", {"Authorization": f"Bearer {API_KEY}"}) == 200


def test_negative_budgets_stop_the_service_at_start():
    from etl_app.config import Settings

    with pytest.raises(ValueError, match="ETL_AUTH_FAILURES_PER_MINUTE"):
        Settings.from_env({"ETL_AUTH_FAILURES_PER_MINUTE": "-1"})
    assert Settings.from_env({}).auth_failures_per_minute == 20


def test_right_keys_cost_no_redis_round_trip_until_the_address_fails_here(make_app, one_window, monkeypatch):
    monkeypatch.setattr(authfail, "_seen", set())
    monkeypatch.setattr(authfail, "_seen_window", -1)
    app = make_app(auth_failures_per_minute=3)
    cache = app.extensions["etl"].cache
    reads = []
    real_get = cache.get
    monkeypatch.setattr(cache, "get", lambda name: reads.append(name) or real_get(name))
    client = app.test_client()
    right = {"Authorization": f"Bearer {API_KEY}"}
    assert all(
        client.get("/api/v1/record-types", headers=right, environ_base=ATTACKER).status_code == 200 for _ in range(5)
    )
    assert reads == []
    # once this process has seen the address fail, its requests read the counter again
    assert client.get("/api/v1/record-types", headers=wrong(1), environ_base=ATTACKER).status_code == 401
    assert client.get("/api/v1/record-types", headers=right, environ_base=ATTACKER).status_code == 200
    assert len(reads) == 1 and "203.0.113.7" in reads[0]
    # and another address still costs nothing
    assert client.get("/api/v1/record-types", headers=right, environ_base=ELSEWHERE).status_code == 200
    assert len(reads) == 1
