"""The enrich step's lookups (etl_app.pipeline.lookups) against a real HTTP server on 127.0.0.1 and
the real Redis: the fields each record gets, its lookup_status, and when a chunk is retried."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis

from etl_app.config import Settings
from etl_app.lookups import EMPTY, FAILED, FOUND, NOT_FOUND_STATUS, SKIPPED
from etl_app.lookups.geocoder import geocoder_provider
from etl_app.pipeline import lookups as step
from etl_app.pipeline.stash import item
from etl_app.record_types import get_registry

from tests.helpers.geocoder_server import FakeGeocoder
from tests.helpers.support import KEY_PREFIX, redis_db

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


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
    own = f"{KEY_PREFIX}{unique}:"
    yield own
    keys = list(cache.scan_iter(f"{own}*", count=1000))
    if keys:
        cache.delete(*keys)


@pytest.fixture
def enrich(server, cache, prefix):
    """``enrich(locations, attempt=0, throttled=0, url=server.url, **settings)`` → (items, plan)."""

    def run(locations, *, attempt=0, throttled=0, url: Any = server.url, **over):
        settings = Settings(geocoder_url=url, geocoder_rate="", geocoder_backoff_seconds=1.0, **over)
        providers = [geocoder_provider(settings, read_timeout=2.0, total_timeout=5.0)]
        items = [item(i, "ing", NOW, None, {"tutor_id": f"T{i}", "location": loc}) for i, loc in enumerate(locations)]
        with httpx.Client() as http:
            results = step.look_up(providers, items, redis=cache, http=http, key_prefix=prefix, attempt=attempt)
        return step.fill(providers, results, items, NOW), step.retry_plan(results, attempt, throttled)

    return run


def lookup_fields(one) -> tuple:
    data = one["data"]
    return tuple(data[f] for f in ("country", "country_code", "timezone", "latitude", "longitude"))


def test_tutors_declare_the_geocoder_and_have_its_columns():
    tutors = get_registry()["tutors"]
    assert tutors.lookups == (geocoder_provider,)
    provider = tutors.lookups[0](Settings())
    assert set(provider.fills) | {"lookup_status", "looked_up_at"} <= set(tutors.table.c.keys())


def test_each_record_gets_its_values_fields_and_status(enrich, server):
    items, plan = enrich(["Berlin", "  berlin ", "Atlantis", None, "Lima"])
    assert plan is None
    assert [one["data"]["lookup_status"] for one in items] == [FOUND, FOUND, NOT_FOUND_STATUS, EMPTY, FOUND]
    assert lookup_fields(items[0]) == lookup_fields(items[1]) == ("Germany", "DE", "Europe/Berlin", 52.52, 13.41)
    assert lookup_fields(items[4]) == ("Peru", "PE", "America/Lima", -12.04, -77.03)
    assert lookup_fields(items[2]) == lookup_fields(items[3]) == (None,) * 5
    assert [one["data"]["looked_up_at"] for one in items] == [NOW, NOW, NOW, None, NOW]
    assert dict(server.requests) == {"berlin": 1, "atlantis": 1, "lima": 1}
    assert items[0]["data"]["tutor_id"] == "T0" and items[0]["id"] == 0  # the rest of the item kept

    again, _ = enrich(["Berlin", "Atlantis"])  # from the cache
    assert [one["data"]["lookup_status"] for one in again] == [FOUND, NOT_FOUND_STATUS]
    assert server.total == 3


def test_no_geocoder_url_skips_without_a_request(enrich, server):
    items, plan = enrich(["Berlin", None], url=None)
    assert plan is None
    assert [(one["data"]["lookup_status"], one["data"]["looked_up_at"]) for one in items] == [
        (SKIPPED, None),
        (EMPTY, None),
    ]
    assert lookup_fields(items[0]) == (None,) * 5
    assert server.total == 0


def test_a_failing_provider_is_retried_within_its_budget_then_goes_on_failed(enrich, server):
    server.reply = lambda name: ("json", (500, {"error": "boom"}, {}))
    items, plan = enrich(["Berlin"], attempt=0, geocoder_max_retries=2)
    assert plan is not None and plan.countdown >= 1 and plan.throttled == 0
    _, plan = enrich(["Lima"], attempt=1, geocoder_max_retries=2)
    assert plan is not None
    items, plan = enrich(["Lagos"], attempt=2, geocoder_max_retries=2)
    assert plan is None  # the budget is spent: the record goes on
    assert items[0]["data"]["lookup_status"] == FAILED and items[0]["data"]["looked_up_at"] == NOW
    assert lookup_fields(items[0]) == (None,) * 5
    assert server.total == 3


def test_throttling_alone_is_retried_beyond_the_budget_up_to_its_own_bound(enrich, server):
    server.reply = lambda name: ("json", (429, {}, {"Retry-After": "3"}))
    _, plan = enrich(["Berlin"], attempt=5, throttled=0, geocoder_max_retries=1)
    assert plan == step.RetryPlan(countdown=3, throttled=1)
    items, plan = enrich(["Lima"], attempt=5, throttled=step.MAX_THROTTLED_RETRIES, geocoder_max_retries=1)
    assert plan is None
    assert items[0]["data"]["lookup_status"] == FAILED


def test_a_lookup_that_cannot_be_built_leaves_the_records_failed(cache, prefix):
    def broken(settings):
        raise ValueError("no such provider")

    tutors = get_registry()["tutors"]
    fake_type = type(tutors)(**{**tutors.__dict__, "name": "broken_lookup", "lookups": (broken,)})
    providers = step.providers_for(fake_type, Settings())
    assert providers == [None]
    items = [item(1, "ing", NOW, None, {"location": "Berlin"})]
    results = step.look_up(providers, items, redis=cache, http=step.http_client(), key_prefix=prefix, attempt=0)
    assert step.retry_plan(results, 0, 0) is None
    assert step.fill(providers, results, items, NOW)[0]["data"]["lookup_status"] == FAILED
