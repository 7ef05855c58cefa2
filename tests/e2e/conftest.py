"""End-to-end fixtures: gunicorn and a real `celery worker` against the local Redis and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import sqlalchemy as sa

from procs import Stack, wait_until
from support import API_KEY, KEY_PREFIX, redis_db

E2E_REDIS = redis_db(15)
# Short budgets so that a child whose parent never comes is dead-lettered within the test.
E2E_ENV = {"ETL_PARENT_WAIT_SECONDS": "8", "ETL_RETRY_BACKOFF_SECONDS": "1", "ETL_RETRY_BACKOFF_MAX_SECONDS": "2"}


@pytest.fixture(scope="module")
def stack(database_url, tmp_path_factory) -> Iterator[Stack]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": E2E_REDIS,
        "ETL_API_KEYS": API_KEY,
        "ETL_BROKER_KEY_PREFIX": f"{KEY_PREFIX}e2e:",
        **E2E_ENV,
    }
    s = Stack(env, tmp_path_factory.mktemp("logs"))
    try:
        s.worker()
        s.web()
        yield s
    finally:
        s.stop()


class Api:
    """A small HTTP client for the running web process."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {API_KEY}"

    def post(self, path: str, payload) -> requests.Response:
        return self.http.post(f"{self.base}/api/v1/{path}", json=payload, timeout=30)

    def get(self, path: str) -> requests.Response:
        return self.http.get(f"{self.base}/api/v1/{path}", timeout=30)

    def wait_finished(self, ingestion_id: str, timeout: float = 60) -> dict:
        def done():
            body = self.get(f"ingestions/{ingestion_id}").json()
            return body if body["status"] == "finished" else None

        return wait_until(done, timeout, what=f"ingestion {ingestion_id} to finish")


@pytest.fixture(scope="module")
def api(stack) -> Api:
    return Api(stack.web_url)


@pytest.fixture
def sql(engine):
    def run(query: str, **params):
        with engine.connect() as conn:
            return conn.execute(sa.text(query), params).all()

    return run
