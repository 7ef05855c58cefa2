"""The stash (etl_app.pipeline.stash): a chunk's values wait in Redis between stages, and travel in
the message instead when Redis does not take them (down or unreachable)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import redis

from etl_app.pipeline.stash import INLINE, Stash, item
from etl_app.record_types import get_registry


def _items():
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    data = {"student_id": "st-1", "name": "Ada", "grade_level": 7, "enrolled_on": "2025-09-01"}
    return [item(11, "6f1c0c9e-0000-4000-8000-000000000001", at, None, data)]


def test_values_wait_in_redis_under_a_key_and_are_dropped(api_redis_url, broker_prefix):
    client = redis.Redis.from_url(api_redis_url)
    stash = Stash(client, broker_prefix)
    key = stash.put(_items())
    assert key.startswith(f"{broker_prefix}etl:chunk:") and client.exists(key)
    back = stash.get(get_registry()["students"], key)
    assert back[0]["data"]["enrolled_on"] == date(2025, 9, 1) and back[0]["received_at"].tzinfo is not None
    stash.drop(key)
    assert not client.exists(key)


def test_with_redis_down_the_values_travel_in_the_key_and_read_back_the_same():
    down = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1, socket_timeout=1)
    stash = Stash(down, "p:")
    key = stash.put(_items())
    assert key.startswith(INLINE)
    back = stash.get(get_registry()["students"], key)
    assert back[0]["id"] == 11 and back[0]["data"]["enrolled_on"] == date(2025, 9, 1)
    assert stash.get_encoded(stash.put_encoded(b'[{"a": 1}]')) == b'[{"a": 1}]'
    stash.drop(key)  # nothing to drop, and no Redis call that could fail
