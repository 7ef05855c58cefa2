"""Shared fixtures: a real PostgreSQL database migrated once, real Redis, real processes.

Environment: DATABASE_URL_TEST (a server URL; the database `etl_app_test` is created on it)
and REDIS_URL_TEST (a Redis URL; tests use databases 13 to 15 on that server).
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from etl_app.db import make_engine
from etl_app.runtime.celery_app import TASK_MODULES

from tests.helpers.support import API_KEY, KEY_PREFIX, RUN_ID, fresh_database, redis_db

for _module in TASK_MODULES:  # the tests call tasks in-process; a worker imports them by name
    importlib.import_module(_module)

# Every API answer must come out of its documented schema unchanged (etl_app.api.spec.dump); the
# processes the tests start inherit it.
os.environ.setdefault("ETL_STRICT_BODIES", "1")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database of this run's own (``<name>_<run id>``), migrated to head once, dropped at the end."""
    with fresh_database(RUN_ID) as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(database_url, pool_size=2, application_name="etl_app-tests")
    yield eng
    eng.dispose()


@pytest.fixture
def api_redis_url() -> str:
    """The Redis that API tests publish to; no worker consumes their keys."""
    return redis_db(14)


@pytest.fixture
def broker_prefix(api_redis_url: str) -> Iterator[str]:
    """This test's own broker keys (queues are ``<prefix>etl`` and ``<prefix>dead_letter``)."""
    prefix = f"{KEY_PREFIX}{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(api_redis_url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def make_app(database_url: str, api_redis_url: str, broker_prefix: str):
    from etl_app.web.app import create_app

    apps = []

    def factory(**overrides):
        config = {
            "database_url": database_url,
            "redis_url": api_redis_url,
            "broker_url": api_redis_url,
            "broker_key_prefix": broker_prefix,
            "api_keys": (API_KEY,),
            # Backpressure off: this database holds other tests' records left unsettled on purpose
            # (some received long ago); tests/api/test_backpressure.py sets the bounds it checks.
            "backlog_max_records": 0,
            "backlog_max_age_seconds": 0,
            **overrides,
        }
        app = create_app(config)
        apps.append(app)
        return app

    yield factory
    for app in apps:  # no relay thread outlives its test
        app.extensions["etl"].relay.stop()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def since(engine) -> str:
    """The database's clock as the test starts (ISO 8601): a ``since`` filter that keeps the
    ingestions of earlier tests out of a list."""
    with engine.connect() as conn:
        return conn.scalar(sa.text("SELECT clock_timestamp()")).isoformat()


@pytest.fixture
def unique() -> str:
    """A prefix that keeps this test's keys apart from every other test's."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def make_cli(database_url, broker_prefix, tmp_path):
    """``make_cli(**env)`` → ``run(*args, input=None)``: ``etl-app`` invoked in-process on this
    run's database and this test's broker keys (``env`` adds or overrides variables)."""
    from click.testing import CliRunner

    from etl_app.cli import main

    def factory(**extra: str):
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_db(14),
            "CELERY_BROKER_URL": redis_db(14),
            "ETL_BROKER_KEY_PREFIX": broker_prefix,
            "ETL_VAR_DIR": str(tmp_path),
            "COLUMNS": "200",
            **extra,
        }

        def run(*args: str, input: bytes | None = None):
            return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)

        return run

    return factory
