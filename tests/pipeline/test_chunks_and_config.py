"""Chunk encoding between stages, settings from the environment, and the error mapping."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy.exc as sa_exc

from etl_app import errors
from etl_app.config import Settings
from etl_app.pipeline import stash
from etl_app.record_types import get_registry

pytestmark = pytest.mark.unit

AS_OF = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_a_chunk_survives_encoding_with_types_and_offsets_intact():
    rt = get_registry()["sessions"]
    data, errs = rt.validate(
        {
            "session_id": "S1",
            "tutor_id": "T1",
            "student_id": "ST1",
            "session_number": 1,
            "scheduled_start": "2026-11-21T23:30:00-05:00",
            "duration_minutes": 60,
            "subject": "Math",
            "session_type": "regular",
        },
        AS_OF,
    )
    assert errs == {}
    items = [{"id": 7, "ingestion_id": "0b6c", "received_at": AS_OF, "waiting_since": None, "data": data}]
    back = stash.decode(rt, stash.encode(items))
    assert back == items
    start = back[0]["data"]["scheduled_start"]
    assert start.utcoffset() == timedelta(hours=-5) and start.weekday() == 5  # still Saturday where it happened


def test_dates_come_back_as_dates():
    rt = get_registry()["tutors"]
    data, _ = rt.validate(
        {
            "tutor_id": "T",
            "name": "N",
            "email": "n@example.org",
            "subjects": ["a"],
            "onboarding_date": "2026-01-02",
            "status": "active",
        },
        AS_OF,
    )
    back = stash.decode(rt, stash.encode([{"id": 1, "received_at": AS_OF, "data": data}]))[0]["data"]
    assert back["onboarding_date"] == date(2026, 1, 2)
    assert back["updated_at"] == AS_OF.astimezone(UTC)


def test_settings_from_environment_and_retry_budgets():
    s = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://x/y",
            "REDIS_URL": "redis://r:1/0",
            "ETL_API_KEYS": "a, b,,",
            "ETL_CHUNK_SIZE": "100",
            "ETL_RETRY_BUDGETS": "persistence=12, internal=3",
        }
    )
    assert s.broker_url == "redis://r:1/0" and s.api_keys == ("a", "b") and s.chunk_size == 100
    assert (s.max_retries("persistence"), s.max_retries("internal"), s.max_retries("enrichment")) == (12, 3, 6)
    assert Settings.from_env({"REDIS_URL": "redis://a", "CELERY_BROKER_URL": "redis://b"}).broker_url == "redis://b"


def test_the_lookup_cache_may_name_a_redis_of_its_own():
    assert Settings.from_env({"REDIS_URL": "redis://r:1/0"}).lookup_cache_url == ""  # the cache Redis
    own = Settings.from_env({"REDIS_URL": "redis://r:1/0", "ETL_LOOKUP_CACHE_URL": " redis://c:2/3 "})
    assert own.lookup_cache_url == "redis://c:2/3" and own.redis_url == "redis://r:1/0"
    for url in ("rediss://:secret@c:6380/0", "unix:///run/redis.sock?db=2"):
        assert Settings.from_env({"ETL_LOOKUP_CACHE_URL": url}).lookup_cache_url == url
    with pytest.raises(ValueError, match="ETL_LOOKUP_CACHE_URL") as refused:
        Settings.from_env({"ETL_LOOKUP_CACHE_URL": "http://user:secret@c:6379"})
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize("env", [{"ETL_CHUNK_SIZE": "0"}, {"ETL_RETRY_BACKOFF_MAX_SECONDS": "3000"}])
def test_unsafe_settings_are_refused(env):
    with pytest.raises(ValueError):
        Settings.from_env(env)


def test_errors_are_sorted_once_into_transient_and_permanent():
    orig = Exception("boom")
    assert errors.is_transient(sa_exc.OperationalError("SELECT 1", {}, orig))
    assert errors.error_type_of(sa_exc.OperationalError("SELECT 1", {}, orig)) == errors.PERSISTENCE
    assert not errors.is_transient(sa_exc.DataError("INSERT", {}, orig))
    assert errors.error_type_of(sa_exc.DataError("INSERT", {}, orig)) == errors.PERSISTENCE
    assert errors.is_transient(ConnectionRefusedError())
    assert not errors.is_transient(KeyError("x"))
    assert errors.error_type_of(KeyError("x")) == errors.INTERNAL
