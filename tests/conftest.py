"""Shared fixtures: a real PostgreSQL database migrated once, real Redis, real processes.

Environment: DATABASE_URL_TEST (a server URL; the database `etl_app_test` is created on it)
and REDIS_URL_TEST (a Redis URL; tests use databases 13 to 15 on that server).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
import sqlalchemy as sa

from etl_app.db import make_engine
from etl_app.migrate import upgrade

from support import API_KEY, SERVER_URL, redis_db


def _recreate_database(url: str) -> str:
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "etl_app_test"
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


@pytest.fixture(scope="session")
def database_url() -> str:
    """A fresh database, migrated to head once for the whole run."""
    url = _recreate_database(SERVER_URL)
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(database_url, pool_size=2, application_name="etl_app-tests")
    yield eng
    eng.dispose()


@pytest.fixture
def api_redis_url() -> str:
    """A Redis database no worker consumes: messages published by API tests stay visible."""
    url = redis_db(14)
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def make_app(database_url: str, api_redis_url: str):
    from etl_app import create_app

    def factory(**overrides):
        config = {
            "database_url": database_url,
            "redis_url": api_redis_url,
            "broker_url": api_redis_url,
            "api_keys": (API_KEY,),
            **overrides,
        }
        return create_app(config)

    return factory


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
def unique() -> str:
    """A prefix that keeps this test's keys apart from every other test's."""
    return "t" + uuid.uuid4().hex[:10]
