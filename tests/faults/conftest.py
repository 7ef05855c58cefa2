"""Fault-test fixtures: a private PostgreSQL, Redis and RabbitMQ node (the tests stop and start
them), and the app's own processes (gunicorn, celery worker, beat) per test, on the test's own
broker keys (Redis) or vhost (RabbitMQ).

Every test that starts a stack runs twice, once on each broker (the ``broker`` fixture): Redis as
broker and cache, or RabbitMQ as broker with Redis as the cache.

Every test gets a short outbox lease and sweep interval, so that what a fault strands is
re-driven within seconds rather than minutes. Whatever a test stops is started again at the
latest in the fixture teardown, before the next test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from etl_app.db import make_engine
from etl_app.migrate import upgrade
from etl_app.record_types import get_registry

from tests.helpers.brokers import PrivateRabbit, RabbitBroker, RedisBroker, rabbitmq_available
from tests.helpers.faultlib import CURRENT_BROKER, RESULTS, Answers, RecordingApi
from tests.helpers.procs import Stack
from tests.helpers.services import PrivatePostgres, PrivateRedis, wait_for_postgres
from tests.helpers.support import API_KEY

TEMPLATE_DB = "etl_app_faults_template"
# Seconds: the sweeper runs every SWEEP_INTERVAL and re-drives records whose last enqueue is
# older than LEASE (the production defaults are 60 and 300).
SWEEP_INTERVAL = 2
LEASE = 10

BASE_ENV = {
    "ETL_SWEEP_INTERVAL_SECONDS": str(SWEEP_INTERVAL),
    "ETL_OUTBOX_LEASE_SECONDS": str(LEASE),
    "ETL_RETRY_BACKOFF_SECONDS": "1",
    "ETL_RETRY_BACKOFF_MAX_SECONDS": "4",
    "ETL_CHUNK_SIZE": "250",
}


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    """The private PostgreSQL, with a migrated template database each test copies."""
    pg = PrivatePostgres(database=TEMPLATE_DB)
    try:
        pg.start()
        pg.create_database()
        upgrade(pg.url)
        yield pg
    finally:
        pg.destroy()


@pytest.fixture(scope="session")
def private_redis() -> Iterator[PrivateRedis]:
    r = PrivateRedis()
    try:
        r.start()
        yield r
    finally:
        r.destroy()


@pytest.fixture(scope="session")
def private_rabbit() -> Iterator[PrivateRabbit]:
    if not rabbitmq_available():
        pytest.skip("RabbitMQ (rabbitmq-server, rabbitmqctl) is not installed")
    node = PrivateRabbit()
    try:
        node.start()
        yield node
    finally:
        node.destroy()


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request, private_redis: PrivateRedis) -> Iterator[RedisBroker | RabbitBroker]:
    """The broker of this test's stacks; started again after the test, whatever it did to it."""
    if request.param == "redis":
        chosen: RedisBroker | RabbitBroker = RedisBroker(private_redis)
    else:
        chosen = RabbitBroker(request.getfixturevalue("private_rabbit"))
    CURRENT_BROKER["name"] = chosen.name
    yield chosen
    CURRENT_BROKER["name"] = "redis"
    chosen.start()


@pytest.fixture(autouse=True)
def services_restored(private_pg: PrivatePostgres, private_redis: PrivateRedis) -> Iterator[None]:
    """Both private servers run before each test and again after it, whatever it stopped."""
    private_pg.start()
    private_redis.start()
    yield
    private_redis.resume()
    private_redis.start()
    private_pg.start()
    wait_for_postgres(private_pg.admin_url)


@pytest.fixture
def fault_db_url(private_pg: PrivatePostgres) -> Iterator[str]:
    """This test's own database (a copy of the migrated template): a sweeper of one test never
    sees the records another test left behind."""
    name = f"faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(private_pg.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    yield private_pg.url_of(name)
    wait_for_postgres(private_pg.admin_url)
    with psycopg.connect(private_pg.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fault_engine(fault_db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(fault_db_url, pool_size=2, application_name="etl_app-fault-tests")
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def registry():
    return get_registry()


class FaultStack(Stack):
    """A Stack on the private servers with this test's own broker key prefix or vhost. Its
    clients record what the API answered them in ``answers`` (for ``assert_exactly_once``)."""

    def __init__(self, env: dict[str, str], log_dir: Path, redis: PrivateRedis, broker) -> None:
        super().__init__(env, log_dir)
        self.redis = redis  # the cache (and, with RedisBroker, the broker)
        self.broker = broker
        self.broker_env = env
        self.answers = Answers()

    def pipeline_messages(self, queued: bool = True) -> int:
        """Pipeline messages the broker holds for this stack: delivered and not acknowledged,
        plus (``queued``) waiting in their queues."""
        return self.broker.pipeline_messages(self.broker_env, queued=queued)

    def api(self, timeout: float = 60) -> RecordingApi:
        assert self.web_url, "start web first"
        return RecordingApi(self.web_url, self.answers, timeout)

    def up(self, concurrency: int = 2, worker_app: str = "wsgi:celery", beat: bool = True) -> RecordingApi:
        """web, worker and (unless ``beat`` is false: no outbox sweeper) beat; returns a client
        of the web process."""
        self.worker(concurrency=concurrency, app=worker_app)
        if beat:
            self.beat(app=worker_app)
        self.web()
        return self.api()

    def flush_broker(self) -> int:
        """Everything the broker holds for this stack gone; how many keys or messages there were."""
        return self.broker.flush(self.broker_env)

    def tails(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            out.append(f"----- {path.name} (last {lines} lines)\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


@pytest.fixture
def make_stack(fault_db_url, private_redis, broker, tmp_path, request) -> Iterator:
    """``make_stack(**env)`` → a FaultStack on this test's broker (nothing started yet); stopped
    and its broker keys or vhost removed at teardown. On failure the tail of every process log
    is printed."""
    stacks: list[FaultStack] = []

    def factory(**env: str) -> FaultStack:
        full_env = {
            "DATABASE_URL": fault_db_url,
            "REDIS_URL": private_redis.url(0),
            "ETL_API_KEYS": API_KEY,
            **broker.stack_env(),
            **BASE_ENV,
            **env,
        }
        log_dir = tmp_path / f"stack{len(stacks)}"
        log_dir.mkdir()
        stack = FaultStack(full_env, log_dir, private_redis, broker)
        stacks.append(stack)
        return stack

    yield factory
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for stack in stacks:
        stack.stop()
        if failed:
            print(stack.tails())
        try:
            broker.start()
            broker.cleanup(stack.broker_env)
        except Exception as exc:  # noqa: BLE001 - the broker may be down if the test failed badly
            print(f"could not remove the stack's broker keys or vhost: {exc}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("fault scenarios: records submitted / persisted / dead-lettered, time to settle")
    tr.write_line(f"{'scenario':64} {'submitted':>9} {'persisted':>9} {'dead':>5} {'settle s':>8}  notes")
    for r in RESULTS:
        notes = {k: v for k, v in r.items() if k not in {"scenario", "submitted", "persisted", "dead", "settle_s"}}
        tr.write_line(
            f"{r['scenario']:64} {r['submitted']:>9} {r['persisted']:>9} {r['dead']:>5} {r['settle_s']:>8}  {notes}"
        )
