"""External lookups across real processes: gunicorn, `celery worker` processes (and a `celery beat`)
whose geocoder is the Open-Meteo-like server of tests/helpers/geocoder_server.py on 127.0.0.1, which
notes the time and client port of every request. The shared rate limit across two workers, the
breaker opened by failures and closed again with lookup-refresh re-enriching through the worker,
a lookup cache on a Redis of its own that stops, and a slow or resetting geocoder."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime

import psutil
import pytest
import redis

from etl_app.config import Settings
from etl_app.local.processes import free_port
from etl_app.lookups import cache_key
from etl_app.lookups.geocoder import geocoder_provider

from tests.helpers.geocoder_server import BERLIN, FakeGeocoder, Reply, answer_for, dead_letters, places, stored, submit
from tests.helpers.procs import Proc, Stack, running_stack, wait_until
from tests.helpers.support import redis_db

pytestmark = pytest.mark.slow

E2E_REDIS = redis_db(15)
# Short retry waits; chunks of 4, so that a few tutors make several chunks for the workers to share.
E2E_ENV = {"ETL_RETRY_BACKOFF_SECONDS": "1", "ETL_RETRY_BACKOFF_MAX_SECONDS": "2", "ETL_CHUNK_SIZE": "4"}
RATE = 4  # a second
# Requests are timed where the server receives them, after the token was taken: the way from the
# token to the server may bring two of them this much closer together than their tokens were.
ALLOWANCE = 0.05


@pytest.fixture(scope="module")
def stack(database_url, tmp_path_factory) -> Iterator[Stack]:
    """gunicorn only: each test starts its workers (the e2e conftest's ``worker``)."""
    with running_stack(database_url, E2E_REDIS, tmp_path_factory.mktemp("logs"), **E2E_ENV) as s:
        s.web()
        yield s


def found_everywhere(name: str) -> Reply:
    return "json", (200, {"results": [{"id": 1, **BERLIN, "timezone": "Europe/Berlin"}]}, {})


def most_in_a_window(times: list[float], width: float) -> int:
    """The most requests whose arrival times fit in one window of ``width`` seconds."""
    times, most, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= width:
            start += 1
        most = max(most, end - start + 1)
    return most


def talked_to(proc: Proc, server: FakeGeocoder) -> bool:
    """Whether a process of this worker (the main one or a pool child) holds a connection to the
    server from a port the server answered a request on."""
    port = int(server.url.rsplit(":", 1)[1])
    tree = psutil.Process(proc.pid)
    for each in [tree, *tree.children(recursive=True)]:
        for conn in each.net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == port and conn.laddr.port in server.peers:
                return True
    return False


def test_two_workers_share_one_rate_limit(api, worker, server, unique, sql):
    """Two worker processes, two pool processes each, 24 tutors of 24 places in six chunks at 4 a
    second: no 1-second window at the server holds more than 4 requests, both workers asked, and
    every tutor lands found (the throttled chunks wait for their turn)."""
    server.reply = found_everywhere
    env = {"ETL_GEOCODER_URL": server.url, "ETL_GEOCODER_RATE": f"{RATE}/second"}
    first, second = worker(name="w1", concurrency=2, **env), worker(name="w2", concurrency=2, **env)
    before = len(server.times)

    ids = submit(api, unique, "rate", tuple(f"Town {unique} {i}" for i in range(24)), count=24)
    times = server.times[before:]
    assert len(times) == 24, "one request a place"
    assert most_in_a_window(times, 1.0 - ALLOWANCE) <= RATE, sorted(t - times[0] for t in times)
    assert talked_to(first, server) and talked_to(second, server)
    assert {row[5] for row in stored(sql, ids).values()} == {"found"}
    assert dead_letters(sql, ids) == 0


def test_the_breaker_opens_and_lookup_refresh_from_beat_lands_the_failed_tutors(
    api, worker, stack, server, unique, sql
):
    """The geocoder answers 500: three chunks, two rounds each, open the breaker (5 failures) and
    the tutors land ``failed``. It recovers; nobody resets the breaker and no new tutor comes: once
    the cool-down (2 s here) is over, the lookup-refresh job that beat sends every second probes
    the geocoder itself, the breaker closes, and the tutors are re-enriched to ``found`` in the
    worker."""
    server.reply = lambda name: ("json", (500, {"error": "down"}, {}))
    geocoder = {"ETL_GEOCODER_URL": server.url, "ETL_GEOCODER_BREAKER_COOLDOWN_SECONDS": "2"}
    worker(**geocoder, ETL_GEOCODER_MAX_RETRIES="1", ETL_GEOCODER_BACKOFF_SECONDS="0.2")
    berlin, lima, _ = places(unique)
    since = datetime.now(UTC)
    before = server.total

    ids = submit(api, unique, "down", (berlin, lima), count=12)
    assert {row[5] for row in stored(sql, ids).values()} == {"failed"}
    assert server.total - before <= 6  # one call a chunk a round: the rest of a chunk is deferred
    breaker = provider_state(api)["breaker"]
    assert breaker["state"] == "open" and breaker["opened_count"] >= 1, breaker

    server.reply = answer_for(unique)
    beat = stack.beat(**geocoder, ETL_SCHEDULE_LOOKUP_REFRESH="1", ETL_SWEEP_INTERVAL_SECONDS="3600")
    try:
        wait_until(
            lambda: {row[5] for row in stored(sql, ids).values()} == {"found"},
            90,  # the job takes every due tutor of the database, other modules' too, oldest first
            what="lookup-refresh to land the failed tutors found",
        )
    finally:
        beat.stop()
        stack.procs.remove(beat)
    rows = stored(sql, ids)
    assert {row[1] for row in rows.values()} == {"DE", "PE"}
    assert provider_state(api)["breaker"]["state"] == "closed"
    runs = sql(
        "SELECT trigger, status, rows FROM job_runs WHERE job = 'lookup-refresh' AND started_at >= :since",
        since=since,
    )
    assert any(trigger == "beat" and status == "succeeded" and n >= 1 for trigger, status, n in runs), runs
    assert dead_letters(sql, ids) == 0


def provider_state(api) -> dict:
    r = api.get("providers")
    assert r.status_code == 200, r.text
    return next(p for p in r.json()["providers"] if p["name"] == "geocoder")


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen]]:
    """A `redis-server` of this test's own on a free port (nothing saved); stopped at the end."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        wait_until(lambda: _answers(client), 20, what="the private redis-server to answer")
        yield url, proc
    finally:
        client.close()
        proc.kill()
        proc.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_a_lookup_cache_of_its_own_that_stops_is_a_miss(api, worker, stack, server, unique, sql, private_redis):
    """ETL_LOOKUP_CACHE_URL names a private Redis: the answers are cached there (not in the shared
    one) and a second batch asks nothing. The private Redis stops: the next batch lands found by
    asking the geocoder again, without a dead letter. (One chunk a batch: two chunks at once would
    both miss a place.)"""
    url, cache_server = private_redis
    server.reply = answer_for(unique)
    worker(ETL_GEOCODER_URL=server.url, ETL_LOOKUP_CACHE_URL=url)
    locations = places(unique)
    names = [place.casefold() for place in locations]
    expected = {"found", "not_found"}

    first = submit(api, unique, "a", locations, count=3)
    assert [server.requests[name] for name in names] == [1, 1, 1]
    private, shared = redis.Redis.from_url(url), redis.Redis.from_url(E2E_REDIS)
    keys = [cache_key(stack.prefix, geocoder_provider(Settings(geocoder_url=server.url)), name) for name in names]
    assert (private.exists(*keys), shared.exists(*keys)) == (3, 0)
    private.close()
    shared.close()
    again = submit(api, unique, "b", locations, count=3)
    assert [server.requests[name] for name in names] == [1, 1, 1], "answered from the cache"

    cache_server.kill()
    cache_server.wait(10)
    after = submit(api, unique, "c", locations, count=3)
    assert [server.requests[name] for name in names] == [2, 2, 2]
    for batch in (first, again, after):
        assert {row[5] for row in stored(sql, batch).values()} == expected
    assert dead_letters(sql, first + again + after) == 0


def test_a_slow_or_resetting_geocoder_leaves_tutors_failed_without_a_dead_letter(api, worker, server, unique, sql):
    """A geocoder that answers after the read timeout, and one that resets the connection: each
    chunk asks once a round, twice in all (one retry), and its tutors are persisted ``failed``."""
    slow, reset = f"Slow {unique}", f"Reset {unique}"
    replies: dict[str, Reply] = {
        slow.casefold(): ("sleep", (3, found_everywhere(slow))),
        reset.casefold(): ("reset", None),
    }
    server.reply = replies.__getitem__
    worker(
        ETL_GEOCODER_URL=server.url,
        ETL_GEOCODER_TIMEOUT_SECONDS="0.5",
        ETL_GEOCODER_MAX_RETRIES="1",
        ETL_GEOCODER_BACKOFF_SECONDS="0.2",
    )
    ids = submit(api, unique, "slow", (slow,), count=4) + submit(api, unique, "reset", (reset,), count=4)
    assert set(stored(sql, ids).values()) == {(None, None, None, None, None, "failed", True)}
    assert (server.requests[slow.casefold()], server.requests[reset.casefold()]) == (2, 2)
    assert dead_letters(sql, ids) == 0
