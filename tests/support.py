"""Constants and small helpers shared by the test modules."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

SERVER_URL = os.environ.get("DATABASE_URL_TEST", "postgresql://postgres@127.0.0.1:5432/etl_app_test")
REDIS_BASE = os.environ.get("REDIS_URL_TEST", "redis://127.0.0.1:6379/15")
API_KEY = "test-key-" + uuid.uuid4().hex[:8]


def redis_db(n: int) -> str:
    """The same Redis server as REDIS_URL_TEST, database ``n``."""
    parts = urlsplit(REDIS_BASE)
    return urlunsplit((parts.scheme, parts.netloc, f"/{n}", "", ""))
