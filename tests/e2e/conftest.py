"""End-to-end fixtures: gunicorn and a real `celery worker` against the local Redis and PostgreSQL,
on a database of the end-to-end tests' own."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
import sqlalchemy as sa

from etl_app.config import Settings
from etl_app.db import make_engine
from etl_app.lookups import reset_breaker
from etl_app.lookups.geocoder import geocoder_provider

from tests.helpers.geocoder_server import FakeGeocoder
from tests.helpers.procs import Proc, Stack, running_stack
from tests.helpers.support import RUN_ID, Api, fresh_database, redis_db

E2E_REDIS = redis_db(15)
# Short budgets so that a child whose parent never comes is dead-lettered within the test.
E2E_ENV = {"ETL_PARENT_WAIT_SECONDS": "8", "ETL_RETRY_BACKOFF_SECONDS": "1", "ETL_RETRY_BACKOFF_MAX_SECONDS": "2"}


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The end-to-end tests' own database (``<name>_<run id>_e2e``), in place of the one the other
    tests share: the relays, workers and beat of a stack claim, re-drive and sweep every record of
    their database, so they must find none that another test left there on purpose (received and
    never sent, dead-lettered, waiting for a parent), and leave none behind for the other tests."""
    with fresh_database(f"{RUN_ID}_e2e") as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(database_url, pool_size=2, application_name="etl_app-e2e-tests")
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def stack(request, database_url, tmp_path_factory) -> Iterator[Stack]:
    """The module's stack: web and worker with ``E2E_ENV``, and the module's own ``STACK_ENV`` if it has one."""
    env = {**E2E_ENV, **getattr(request.module, "STACK_ENV", {})}
    with running_stack(database_url, E2E_REDIS, tmp_path_factory.mktemp("logs"), **env) as s:
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


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGeocoder]:
    """An Open-Meteo-like geocoder on 127.0.0.1 for the module (tests/helpers/geocoder_server.py)."""
    fake = FakeGeocoder()
    yield fake
    fake.close()


@pytest.fixture
def worker(stack, server) -> Iterator[Callable[..., Proc]]:
    """``worker(**kwargs)``: a worker of this test (``Stack.worker``'s arguments, settings as
    keywords); stopped at the end, and the geocoder's breaker closed for the next test. For a
    module whose ``stack`` starts no worker of its own."""
    started: list[Proc] = []

    def start(**kwargs: str) -> Proc:
        proc = stack.worker(**kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
        stack.procs.remove(proc)
    client = redis.Redis.from_url(E2E_REDIS)
    reset_breaker(client, stack.prefix, geocoder_provider(Settings(geocoder_url=server.url)))
    client.close()
