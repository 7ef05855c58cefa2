"""Constants and small helpers shared by the test modules."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

SERVER_URL = os.environ.get("DATABASE_URL_TEST", "postgresql://postgres@127.0.0.1:5432/etl_app_test")
REDIS_BASE = os.environ.get("REDIS_URL_TEST", "redis://127.0.0.1:6379/15")
API_KEY = "test-key-" + uuid.uuid4().hex[:8]
# Every test run has its own database and its own broker keys, so runs never disturb each other.
RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
KEY_PREFIX = f"etltest-{RUN_ID}:"


def queue_length(redis_url: str, prefix: str, queue: str = "etl") -> int:
    import redis

    return redis.Redis.from_url(redis_url).llen(f"{prefix}{queue}")


def redis_db(n: int) -> str:
    """The same Redis server as REDIS_URL_TEST, database ``n``."""
    parts = urlsplit(REDIS_BASE)
    return urlunsplit((parts.scheme, parts.netloc, f"/{n}", "", ""))
