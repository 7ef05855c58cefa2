"""Constants and small helpers shared by the test modules."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
import requests

SERVER_URL = os.environ.get("DATABASE_URL_TEST", "postgresql://postgres@127.0.0.1:5432/etl_app_test")
REDIS_BASE = os.environ.get("REDIS_URL_TEST", "redis://127.0.0.1:6379/15")
API_KEY = "test-key-" + uuid.uuid4().hex[:8]
# Every test run has its own database and its own broker keys, so runs never disturb each other.
RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
KEY_PREFIX = f"etltest-{RUN_ID}:"


def queue_length(redis_url: str, prefix: str, queue: str = "etl") -> int:
    return redis.Redis.from_url(redis_url).llen(f"{prefix}{queue}")


def wipe_keys(redis_url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (a test's broker keys); how many there were."""
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)


@contextmanager
def fresh_database(suffix: str, *, migrate: bool = True) -> Iterator[str]:
    """A new database ``<name of SERVER_URL>_<suffix>`` migrated to head (left empty with
    ``migrate=False``); dropped at the end."""
    from etl_app.migrate import upgrade

    parts = urlsplit(SERVER_URL)
    name = f"{parts.path.lstrip('/') or 'etl_app_test'}_{suffix}"
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a ``/metrics`` answer (Prometheus text)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def redis_db(n: int) -> str:
    """The same Redis server as REDIS_URL_TEST, database ``n``."""
    parts = urlsplit(REDIS_BASE)
    return urlunsplit((parts.scheme, parts.netloc, f"/{n}", "", ""))


class Api:
    """A small HTTP client for a running web process, with the test key; every request has a
    timeout, so a hanging request fails the test instead of hanging it."""

    def __init__(self, base: str, timeout: float = 30) -> None:
        self.base = base
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {API_KEY}"

    def post(self, path: str, payload: Any, timeout: float | None = None) -> requests.Response:
        return self.http.post(f"{self.base}/api/v1/{path}", json=payload, timeout=timeout or self.timeout)

    def get(self, path: str) -> requests.Response:
        return self.http.get(f"{self.base}/api/v1/{path}", timeout=self.timeout)

    def submit(self, path: str, payload: Any, timeout: float | None = None) -> dict[str, Any]:
        """POST and insist on a 202; returns the body."""
        r = self.post(path, payload, timeout)
        assert r.status_code == 202, (r.status_code, r.text[:2000])
        return r.json()

    def upload(self, record_type: str, name: str, data: bytes, content_type: str = "application/octet-stream"):
        """POST a file to ``/api/v1/<record_type>/upload`` as the multipart field ``file``."""
        files = {"file": (name, data, content_type)}
        return self.http.post(f"{self.base}/api/v1/{record_type}/upload", files=files, timeout=self.timeout)

    def wait_settled(self, ingestion_id: str, timeout: float = 60) -> dict:
        """The ingestion once it is no longer ``running`` (``finished`` or ``failed``)."""
        from tests.helpers.procs import wait_until

        def done():
            body = self.get(f"ingestions/{ingestion_id}").json()
            return body if body["status"] != "running" else None

        return wait_until(done, timeout, what=f"ingestion {ingestion_id} to settle")

    def wait_finished(self, ingestion_id: str, timeout: float = 60) -> dict:
        from tests.helpers.procs import wait_until

        def done():
            body = self.get(f"ingestions/{ingestion_id}").json()
            return body if body["status"] == "finished" else None

        return wait_until(done, timeout, what=f"ingestion {ingestion_id} to finish")
