"""External lookups (etl_app.lookups) against a real HTTP server started here on 127.0.0.1 and
the real Redis: the cache, one call per distinct value, the shared rate limit and circuit
breaker, and every way a provider can fail, without timing assertions (the server counts
requests)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from etl_app.config import Settings
from etl_app.lookups import (
    EMPTY,
    FAILED,
    FOUND,
    NOT_FOUND_STATUS,
    SKIPPED,
    cache_key,
    families,
    lookup_chunk,
    reset_breaker,
    stats,
)
from etl_app.lookups.geocoder import FILLS, geocoder_provider
from etl_app.lookups.ratelimit import TokenLimiter
from etl_app.runtime import Runtime

from tests.helpers.geocoder_server import FakeGeocoder, Reply, open_meteo
from tests.helpers.support import KEY_PREFIX, redis_db


@pytest.fixture
def server() -> Iterator[FakeGeocoder]:
    fake = FakeGeocoder()
    yield fake
    fake.close()


@pytest.fixture
def cache() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_db(13))
    yield client
    client.close()


@pytest.fixture
def prefix(cache: redis.Redis, unique: str) -> Iterator[str]:
    """This test's own keys (cache, rate limit, breaker, metrics)."""
    own = f"{KEY_PREFIX}{unique}:"
    yield own
    keys = list(cache.scan_iter(f"{own}*", count=1000))
    if keys:
        cache.delete(*keys)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


@pytest.fixture
def lookup(server, cache, prefix, http):
    """``lookup(values, provider=None, **provider_overrides)`` → LookupResult, on this test's keys."""

    def run(values, provider=None, *, client=None, own_cache=None, attempt=0, **overrides):
        provider = provider or make_provider(server, **overrides)
        return lookup_chunk(
            provider,
            values,
            redis=client or cache,
            cache=own_cache,
            http_client=http,
            key_prefix=prefix,
            attempt=attempt,
        )

    return run


def make_provider(server: FakeGeocoder, **overrides: Any):
    settings = Settings(geocoder_url=server.url, geocoder_ttl_seconds=3600, geocoder_rate="")
    defaults: dict[str, Any] = {
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "total_timeout": 5.0,
        "not_found_ttl_seconds": 60,
        "backoff_seconds": 1.0,
    }
    return geocoder_provider(settings, **{**defaults, **overrides})


def test_a_value_is_asked_once_then_answered_from_the_cache(server, lookup, cache, prefix):
    first = lookup(["Berlin"])
    assert first.outcome("Berlin") == first.outcome(" berlin ")
    assert first.outcome("Berlin").status == FOUND and not first.outcome("Berlin").cached
    assert first.fields_for("Berlin") == {
        "country": "Germany",
        "country_code": "DE",
        "timezone": "Europe/Berlin",
        "latitude": 52.52,
        "longitude": 13.41,
    }
    assert first.retry_after is None and first.counts["calls:found"] == 1 and first.counts["cache:miss"] == 1

    again = lookup(["BERLIN"])
    assert again.outcome("berlin").status == FOUND and again.outcome("berlin").cached
    assert again.fields_for("berlin") == first.fields_for("Berlin")
    assert again.counts["cache:hit"] == 1 and again.counts["calls:found"] == 0
    assert server.requests == Counter({"berlin": 1})
    provider = make_provider(server)
    assert 3500 < cache.ttl(cache_key(prefix, provider, "berlin")) <= 3600
    assert server.paths == ["/v1/search?name=berlin&count=1"]


def test_a_chunk_asks_each_distinct_value_once(server, lookup):
    cities = ["Berlin", " berlin", "LAGOS", "Lima ", "lima"]
    tutors = [{"tutor_id": i, "location": cities[i % len(cities)]} for i in range(50)]
    provider = make_provider(server, concurrency=3)
    result = lookup([provider.value_of(t) for t in tutors], provider)
    assert server.requests == Counter({"berlin": 1, "lagos": 1, "lima": 1})
    assert {result.outcome(t["location"]).status for t in tutors} == {FOUND}
    assert result.fields_for("Lima")["country_code"] == "PE"
    assert result.counts["calls:found"] == 3 and result.counts["cache:miss"] == 3


def test_calls_in_flight_stay_within_the_bound(server, lookup):
    server.reply = lambda name: ("sleep", (0.1, open_meteo(name)))
    result = lookup([f"town {i}" for i in range(12)], concurrency=3)
    assert server.total == 12 and result.counts["calls:not_found"] == 12
    assert 1 <= server.most_in_flight <= 3


def test_not_found_is_cached_briefly_and_failures_never(server, lookup, cache, prefix):
    server.reply = lambda name: ("json", (500, {"error": "down"}, {})) if name == "broken" else open_meteo(name)
    provider = make_provider(server, not_found_ttl_seconds=60, breaker_failures=100)
    result = lookup(["Atlantis", "Broken", None, "  "], provider)
    assert result.outcome("atlantis").status == NOT_FOUND_STATUS
    assert result.fields_for("atlantis") == dict.fromkeys(FILLS)
    assert result.outcome(None).status == EMPTY and result.outcome("  ").status == EMPTY
    broken = result.outcome("broken")
    assert broken.status == FAILED and broken.error == "server_error" and broken.retry_after > 0
    assert result.retry_after == broken.retry_after and result.should_retry(0)
    assert not result.should_retry(provider.max_retries)

    assert 0 < cache.ttl(cache_key(prefix, provider, "atlantis")) <= 60
    assert not cache.exists(cache_key(prefix, provider, "broken"))
    again = lookup(["atlantis", "broken"], provider)
    assert again.outcome("atlantis").cached and again.outcome("broken").status == FAILED
    assert server.requests == Counter({"atlantis": 1, "broken": 2})


def _take_tokens(args: tuple[str, str, int]) -> int:
    url, prefix, n = args
    limiter = TokenLimiter(redis.Redis.from_url(url), prefix, "geocoder", "5/minute")
    return sum(1 for _ in range(n) if limiter.take()[0])


def test_the_rate_limit_is_shared_by_processes(prefix):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        granted = pool.map(_take_tokens, [(redis_db(13), prefix, 8), (redis_db(13), prefix, 8)])
    assert sum(granted) == 5
    ok, wait = TokenLimiter(redis.Redis.from_url(redis_db(13)), prefix, "geocoder", "5/minute").take()
    assert not ok and 0 < wait <= 60


def test_no_token_left_asks_for_a_retry_instead_of_waiting(server, lookup):
    provider = make_provider(server, rate="2/minute", concurrency=1)
    result = lookup(["berlin", "lagos", "lima"], provider)
    assert server.total == 2
    refused = [o for o in result.outcomes.values() if o.status == FAILED]
    assert len(refused) == 1 and refused[0].error == "no_token"
    assert 0 < result.retry_after <= 60 and result.only_throttled
    # a second worker with its own limiter object shares the same tokens
    other = lookup(["atlantis"], make_provider(server, rate="2/minute"))
    assert other.outcome("atlantis").error == "no_token" and server.total == 2


def test_a_429_honours_retry_after_and_does_not_trip_the_breaker(server, lookup, cache, prefix):
    server.reply = lambda name: ("json", (429, {"reason": "slow down"}, {"Retry-After": "7"}))
    provider = make_provider(server, breaker_failures=1)
    result = lookup(["berlin"], provider)
    assert result.outcome("berlin").error == "rate_limited"
    assert result.retry_after == 7 and result.counts["rate_limited"] == 1
    assert stats(cache, prefix, [provider])["geocoder"]["breaker"]["state"] == "closed"
    assert stats(cache, prefix, [provider])["geocoder"]["rate_limited"] == 1
    assert not cache.exists(cache_key(prefix, provider, "berlin"))


def _wait_for_state(cache, prefix, provider, state: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while stats(cache, prefix, [provider])["geocoder"]["breaker"]["state"] != state:
        assert time.monotonic() < deadline, f"breaker never became {state}"
        time.sleep(0.05)


def test_the_breaker_opens_probes_after_the_cool_down_and_closes(server, lookup, cache, prefix):
    server.reply = lambda name: ("json", (503, {}, {}))
    # The cool-down is the caller's to give (not stored): the same breaker seen with a long one
    # stays open while the test looks, with a short one it half-opens soon.
    slow = make_provider(server, breaker_failures=3, breaker_cooldown_seconds=60, concurrency=1)
    quick = dataclasses.replace(slow, breaker_cooldown_seconds=0.3)
    values = ["berlin", "lagos", "lima", "atlantis", "paris"]
    result = lookup(values, slow)
    assert server.total == 1  # the first call failed: the rest of the chunk waits for the retry
    assert Counter(o.error for o in result.outcomes.values()) == Counter({"server_error": 1, "deferred": 4})
    assert 0 < result.outcome("paris").retry_after and result.should_retry(0)
    assert stats(cache, prefix, [slow])["geocoder"]["breaker"]["state"] == "closed"
    lookup(values, slow)
    third = lookup(values, slow)  # the third failure opens the breaker
    assert server.total == 3
    assert Counter(o.error for o in third.outcomes.values()) == Counter({"server_error": 1, "breaker_open": 4})
    assert 0 < third.outcome("paris").retry_after <= 60
    assert stats(cache, prefix, [slow])["geocoder"]["breaker"]["state"] == "open"
    assert lookup(values, slow).counts["errors:breaker_open"] == 5 and server.total == 3

    _wait_for_state(cache, prefix, quick, "half_open")
    probe = lookup(values, quick)  # one probe, which fails: open again for another cool-down
    assert server.total == 4 and probe.counts["errors:breaker_open"] == 4
    assert stats(cache, prefix, [slow])["geocoder"]["breaker"]["state"] == "open"

    server.reply = open_meteo
    _wait_for_state(cache, prefix, quick, "half_open")
    healed = lookup(values, quick)  # the probe succeeds, the breaker closes, the rest follow
    assert {o.status for o in healed.outcomes.values()} == {FOUND, NOT_FOUND_STATUS}
    assert server.total == 9
    numbers = stats(cache, prefix, [slow])["geocoder"]
    assert numbers["breaker"]["state"] == "closed" and numbers["breaker"]["opened_count"] == 2
    assert numbers["errors"] == {"server_error": 4, "deferred": 8, "breaker_open": 13}
    assert numbers["calls"] == {"failed": 4, "found": 3, "not_found": 2}
    assert numbers["cache"] == {"hit": 0, "miss": 30}  # six chunks of five


def test_an_operator_can_reset_an_open_breaker(server, lookup, cache, prefix):
    server.reply = lambda name: ("json", (500, {}, {}))
    provider = make_provider(server, breaker_failures=1, breaker_cooldown_seconds=600)
    lookup(["berlin"], provider)
    assert stats(cache, prefix, [provider])["geocoder"]["breaker"]["state"] == "open"
    names = {f.name: f for f in families(cache, prefix, [provider])}
    gauge = {tuple(s.labels.values()): s.value for s in names["etl_lookup_breaker_state"].samples}
    assert gauge[("geocoder", "open")] == 1 and gauge[("geocoder", "closed")] == 0
    assert lookup(["lagos"], provider).outcome("lagos").error == "breaker_open" and server.total == 1

    server.reply = open_meteo
    reset_breaker(cache, prefix, provider)
    assert lookup(["lagos"], provider).outcome("lagos").status == FOUND and server.total == 2


def test_a_server_slower_than_the_read_timeout_is_a_timeout(server, lookup):
    server.reply = lambda name: ("sleep", (1.5, open_meteo(name)))
    result = lookup(["berlin"], make_provider(server, read_timeout=0.2))
    outcome = result.outcome("berlin")
    assert outcome.status == FAILED and outcome.error == "timeout" and outcome.retry_after > 0


def test_every_broken_answer_is_a_failure_of_its_kind(server, lookup, cache, prefix):
    big = {"results": [{"name": "x" * 5000}]}
    replies: dict[str, Reply] = {  # asked first, a broken answer of one value does not defer the rest
        "huge": ("json", (200, big, {})),
        "err500": ("json", (500, {"error": "boom"}, {})),
        "reset": ("reset", None),
        "huge-undeclared": ("stream", (200, json.dumps(big).encode(), {})),
        "garbage": ("raw", (200, b"<html>not json", {})),
        "wrong-shape": ("json", (200, {"results": [{"name": "no coordinates"}]}, {})),
        "a-list": ("json", (200, [1, 2], {})),
        "moved": ("json", (302, {}, {"Location": "http://example.invalid/v1/search"})),
        "gone": ("json", (404, {}, {})),
    }
    server.reply = lambda name: replies[name]
    provider = make_provider(server, max_response_bytes=1000, breaker_failures=100)
    result = lookup(list(replies), provider)
    kinds = {name: result.outcome(name).error for name in replies}
    assert kinds == {
        "err500": "server_error",
        "reset": "reset",
        "huge": "too_large",
        "huge-undeclared": "too_large",  # no Content-Length: cut off once the bytes read pass the cap
        "garbage": "malformed",
        "wrong-shape": "malformed",
        "a-list": "malformed",
        "moved": "bad_status",
        "gone": "bad_status",
    }
    assert result.outcome("moved").retry_after is None and result.outcome("reset").retry_after > 0
    assert server.total == len(replies)  # the redirect was not followed
    assert not any(cache.exists(cache_key(prefix, provider, name)) for name in replies)


def test_a_chunk_whose_first_call_finds_the_provider_failing_asks_no_more_this_round(server, lookup):
    """One timeout, not one per value: a provider that hangs holds the worker for one call a
    round, and the rest of the chunk comes back deferred, to be retried with it."""
    server.reply = lambda name: ("sleep", (1.5, open_meteo(name)))
    result = lookup(["berlin", "lagos", "lima"], make_provider(server, read_timeout=0.2, breaker_failures=100))
    assert [result.outcome(v).error for v in ("berlin", "lagos", "lima")] == ["timeout", "deferred", "deferred"]
    assert server.total == 1 and result.retry_after > 0 and result.should_retry(0)
    assert result.counts["errors:deferred"] == 2


def test_a_cache_that_is_down_is_a_miss_never_a_failure(server, lookup):
    # no retries of its own: redis-py's default (three, with backoff) only makes the test slower
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    for _ in range(2):
        result = lookup(["Berlin", "Atlantis"], client=down, rate="100/minute")
        assert result.outcome("berlin").status == FOUND
        assert result.outcome("atlantis").status == NOT_FOUND_STATUS
        assert result.counts["cache:miss"] == 2 and result.retry_after is None
    assert server.requests == Counter({"berlin": 2, "atlantis": 2})


def test_the_cache_may_be_a_redis_of_its_own_and_down_it_costs_one_read_a_chunk(server, lookup, cache, prefix):
    """ETL_LOOKUP_CACHE_URL: the answers are cached there; the rate limit, breaker and metrics stay
    on the shared Redis. Stopped, it is one failed read a chunk (no write), every value a miss, and
    the shared Redis still counts and limits."""
    assert _runtime(redis_url=redis_db(13)).lookup_cache.connection_pool.connection_kwargs["db"] == 13
    own = _runtime(redis_url=redis_db(13), lookup_cache_url=redis_db(12)).lookup_cache
    provider = make_provider(server, rate="100/minute")
    try:
        first = lookup(["Berlin", "Lima"], provider, own_cache=own)
        again = lookup(["berlin"], provider, own_cache=own)
        assert first.counts["calls:found"] == 2 and again.outcome("berlin").cached and server.total == 2
        assert own.exists(cache_key(prefix, provider, "berlin"))
        assert not cache.exists(cache_key(prefix, provider, "berlin"))
    finally:
        if keys := list(own.scan_iter(f"{prefix}*")):
            own.delete(*keys)

    stopped = _Spy(_runtime(lookup_cache_url="redis://127.0.0.1:1/0").lookup_cache)
    values = [f"Atlantis {i}" for i in range(8)]
    down = lookup(values, provider, own_cache=stopped)
    assert {down.outcome(v).status for v in values} == {NOT_FOUND_STATUS} and down.retry_after is None
    assert stopped.asked == ["mget"]  # one read, found down: nothing written back, no read per value
    numbers = stats(cache, prefix, [provider])["geocoder"]
    assert numbers["cache"] == {"hit": 1, "miss": 10} and numbers["calls"] == {"found": 2, "not_found": 8}
    limiter = TokenLimiter(cache, prefix, "geocoder", "100/minute")
    assert limiter.limiter.get_window_stats(limiter.items[0], "geocoder").remaining == 90  # taken in the shared one


def _runtime(**settings: Any) -> Runtime:
    """A runtime of these settings, only for its Redis clients (nothing else is used)."""
    return Runtime(settings=Settings(**settings), engine=None, registry=None, celery=None)  # type: ignore[arg-type]


class _Spy:
    """A Redis client that lists the commands it is asked for."""

    def __init__(self, client: redis.Redis) -> None:
        self.client, self.asked = client, []

    def __getattr__(self, name: str) -> Any:
        self.asked.append(name)
        return getattr(self.client, name)


def test_a_provider_that_is_off_skips_without_a_call(server, lookup):
    provider = geocoder_provider(Settings())
    assert not provider.enabled
    result = lookup(["Berlin", None], provider)
    assert result.outcome("berlin").status == SKIPPED and result.outcome(None).status == EMPTY
    assert result.fields_for("berlin") == dict.fromkeys(FILLS) and result.retry_after is None
    assert server.total == 0


def test_record_data_never_leaves_the_configured_host(server, lookup):
    provider = make_provider(server)
    evil = "http://evil.example/x?count=9&name=y#frag"
    result = lookup([evil, "../../admin"], provider)
    assert {o.status for o in result.outcomes.values()} == {NOT_FOUND_STATUS}
    assert server.requests == Counter({evil.casefold(): 1, "../../admin": 1})
    assert all(p.startswith("/v1/search?name=") and p.endswith("&count=1") for p in server.paths)

    in_path = make_provider(server, path="/v1/place/{value}", query={})
    for value in ("..", "a/../../b", "//evil.example/x", "@evil.example"):
        url = in_path.request_url(value)
        assert (url.host, url.port) == ("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
        assert url.raw_path.decode().startswith("/v1/place/") and url.raw_path.count(b"/") == 3


def test_geocoder_settings_come_from_the_environment(tmp_path):
    env = {
        "ETL_VAR_DIR": str(tmp_path),
        "ETL_GEOCODER_URL": "https://geocoding.example",
        "ETL_GEOCODER_RATE": "5/second",
    }
    settings = Settings.from_env({**env, "ETL_GEOCODER_TTL_SECONDS": "120"})
    provider = geocoder_provider(settings)
    assert provider.enabled and provider.rate == "5/second" and provider.ttl_seconds == 120
    assert str(provider.request_url("São Paulo")) == "https://geocoding.example/v1/search?name=S%C3%A3o+Paulo&count=1"
    assert provider.reads == ("location",) and provider.fills == FILLS
    assert not geocoder_provider(Settings.from_env({"ETL_VAR_DIR": str(tmp_path)})).enabled
    assert (provider.read_timeout, provider.total_timeout) == (5.0, 15.0)
    slow = geocoder_provider(Settings.from_env({**env, "ETL_GEOCODER_TIMEOUT_SECONDS": "30"}))
    assert (slow.read_timeout, slow.total_timeout) == (30.0, 90.0)
    with pytest.raises(ValueError, match="ETL_GEOCODER_TIMEOUT_SECONDS"):
        Settings.from_env({**env, "ETL_GEOCODER_TIMEOUT_SECONDS": "0"})
    assert (provider.breaker_failures, provider.breaker_cooldown_seconds) == (5, 30.0)
    touchy = {"ETL_GEOCODER_BREAKER_FAILURES": "2", "ETL_GEOCODER_BREAKER_COOLDOWN_SECONDS": "3"}
    quick = geocoder_provider(Settings.from_env({**env, **touchy}))
    assert (quick.breaker_failures, quick.breaker_cooldown_seconds) == (2, 3.0)
    for name, value in (("ETL_GEOCODER_BREAKER_FAILURES", "0"), ("ETL_GEOCODER_BREAKER_COOLDOWN_SECONDS", "0.5")):
        with pytest.raises(ValueError, match="ETL_GEOCODER_BREAKER"):
            Settings.from_env({**env, name: value})
