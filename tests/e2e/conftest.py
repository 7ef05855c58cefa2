"""End-to-end fixtures: gunicorn and a real `celery worker` against the local Redis and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from procs import Stack, running_stack
from support import Api, redis_db

E2E_REDIS = redis_db(15)
# Short budgets so that a child whose parent never comes is dead-lettered within the test.
E2E_ENV = {"ETL_PARENT_WAIT_SECONDS": "8", "ETL_RETRY_BACKOFF_SECONDS": "1", "ETL_RETRY_BACKOFF_MAX_SECONDS": "2"}


@pytest.fixture(scope="module")
def stack(database_url, tmp_path_factory) -> Iterator[Stack]:
    with running_stack(database_url, E2E_REDIS, tmp_path_factory.mktemp("logs"), **E2E_ENV) as s:
        s.worker()
        s.web()
        yield s


@pytest.fixture(scope="module")
def api(stack) -> Api:
    return Api(stack.web_url)


@pytest.fixture
def sql(engine):
    def run(query: str, **params):
        with engine.connect() as conn:
            return conn.execute(sa.text(query), params).all()

    return run
