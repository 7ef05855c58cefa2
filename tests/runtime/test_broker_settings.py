"""The broker decides part of Celery's settings: RabbitMQ gets quorum queues on topic exchanges,
publisher confirms and short heartbeats, and none of the Redis transport's options; Redis keeps
its visibility timeout and key prefix. The settings need a Redis beside RabbitMQ, and
`etl-app run` starts one when none is given."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from etl_app.config import Settings, is_rabbitmq
from etl_app.runtime.celery_app import make_celery
from tasks.base import MIN_COUNTDOWN_SECONDS, delivered_queue

pytestmark = pytest.mark.unit

QUEUES = {"etl", "dead_letter", "jobs", "lookups", "uploads"}
AMQP = "amqp://guest:guest@127.0.0.1:5672/etl"


@pytest.mark.parametrize("url", [AMQP, "amqps://u:p@rabbit.example:5671/prod", "AMQP://h//"])
def test_an_amqp_url_gets_quorum_queues_confirms_and_heartbeats_and_no_redis_options(url):
    conf = make_celery("etl_app", url, key_prefix="deployment-a:").conf
    assert {q.name for q in conf.task_queues} == QUEUES
    for queue in conf.task_queues:
        assert queue.queue_arguments == {"x-queue-type": "quorum"}, queue.name
        assert queue.exchange.type == "topic" and queue.routing_key == queue.name  # delayed delivery needs topic
        assert queue.durable
    assert conf.broker_transport_options == {"confirm_publish": True}  # no visibility_timeout, no key prefix
    assert conf.broker_heartbeat == 20
    assert conf.worker_detect_quorum_queues is True
    assert conf.broker_native_delayed_delivery_queue_type == "quorum"
    assert conf.broker_url == url


def test_a_redis_url_keeps_the_redis_transport_options_and_plain_queues():
    conf = make_celery("etl_app", "redis://127.0.0.1:6379/15", key_prefix="deployment-a:").conf
    assert {q.name for q in conf.task_queues} == QUEUES
    for queue in conf.task_queues:
        assert not queue.queue_arguments and queue.exchange.type == "direct", queue.name
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 3600 and options["global_keyprefix"] == "deployment-a:"
    assert "confirm_publish" not in options
    assert conf.broker_heartbeat == 120  # Celery's default (Redis has no heartbeats)
    assert "global_keyprefix" not in make_celery("etl_app", "redis://127.0.0.1:6379/15").conf.broker_transport_options


def test_the_restore_lock_of_a_redis_broker_never_outlives_the_visibility_timeout(monkeypatch):
    # a worker cut off while it holds the lock kept every other worker from restoring messages
    # until it expired (kombu: 300 s), past a short visibility timeout
    import celeryconfig

    assert celeryconfig.broker_settings("redis://h/0")["broker_transport_options"]["unacked_mutex_expire"] == 300
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "20")
    options = celeryconfig.broker_settings("redis://h/0")["broker_transport_options"]
    assert (options["visibility_timeout"], options["unacked_mutex_expire"]) == (20, 20)


def test_is_rabbitmq_tells_the_brokers_apart():
    assert is_rabbitmq(AMQP) and is_rabbitmq("amqps://h/v") and is_rabbitmq("pyamqp://h//")
    assert not is_rabbitmq("redis://h:6379/0") and not is_rabbitmq("rediss://h/0") and not is_rabbitmq("")


def test_a_rabbitmq_broker_without_redis_url_stops_the_service_at_its_start(tmp_path):
    env = {"CELERY_BROKER_URL": AMQP, "DATABASE_URL": "postgresql://x/y", "ETL_VAR_DIR": str(tmp_path)}
    with pytest.raises(ValueError, match=r"REDIS_URL is not set: with a RabbitMQ broker"):
        Settings.from_env(env)
    settings = Settings.from_env({**env, "REDIS_URL": "redis://127.0.0.1:6379/3"})
    assert settings.broker_url == AMQP and settings.redis_url == "redis://127.0.0.1:6379/3"
    assert settings.broker_is_rabbitmq


def test_the_visibility_timeout_bound_applies_to_redis_only(tmp_path, monkeypatch):
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "100")
    env = {"ETL_RETRY_BACKOFF_MAX_SECONDS": "300", "ETL_VAR_DIR": str(tmp_path), "REDIS_URL": "redis://h/0"}
    with pytest.raises(ValueError, match="visibility timeout"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "CELERY_BROKER_URL": AMQP}).retry_backoff_max_seconds == 300


@pytest.mark.parametrize(
    ("routing_key", "queue"),
    [
        ("lookups", "lookups"),
        ("etl", "etl"),
        ("0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.lookups", "lookups"),  # after a delay
        ("celery", None),
        (None, None),
    ],
)
def test_a_retry_goes_back_to_the_queue_its_message_came_from(routing_key, queue):
    assert delivered_queue({"routing_key": routing_key, "exchange": "x"}) == queue
    assert delivered_queue(None) is None


def test_a_backoff_is_at_least_a_whole_second(monkeypatch):
    """RabbitMQ's delayed delivery counts whole seconds; Celery refuses a countdown under one."""
    from types import SimpleNamespace

    from tasks.base import EtlTask

    task = EtlTask()
    monkeypatch.setattr(
        EtlTask, "runtime", SimpleNamespace(settings=Settings(retry_backoff_seconds=1, retry_backoff_max_seconds=2))
    )
    assert min(task.backoff(0) for _ in range(200)) >= MIN_COUNTDOWN_SECONDS == 1.0


class FakeEmbedded:
    started: ClassVar[list[str]] = []

    def __init__(self, var: Path) -> None:
        pass

    def start_postgres(self) -> str:
        self.started.append("postgres")
        return "postgresql://embedded/etl"

    def start_redis(self) -> str:
        self.started.append("redis")
        return "redis://:pw@127.0.0.1:9/0"


@pytest.fixture
def fake_embedded(monkeypatch):
    import etl_app.local.services

    FakeEmbedded.started = []
    monkeypatch.setattr(etl_app.local.services, "EmbeddedServices", FakeEmbedded)
    return FakeEmbedded


@pytest.mark.parametrize(
    ("given", "started", "redis_url"),
    [
        ({}, ["postgres", "redis"], "redis://:pw@127.0.0.1:9/0"),
        ({"CELERY_BROKER_URL": AMQP}, ["postgres", "redis"], "redis://:pw@127.0.0.1:9/0"),
        ({"CELERY_BROKER_URL": AMQP, "DATABASE_URL": "postgresql://mine/db"}, ["redis"], "redis://:pw@127.0.0.1:9/0"),
        ({"CELERY_BROKER_URL": AMQP, "REDIS_URL": "redis://mine/1"}, ["postgres"], "redis://mine/1"),
        ({"CELERY_BROKER_URL": "redis://broker/0"}, ["postgres"], None),  # that Redis is the cache too
    ],
)
def test_etl_app_run_starts_the_embedded_redis_whenever_no_redis_is_given(
    fake_embedded, tmp_path, given, started, redis_url
):
    from etl_app.cli.run import prepare_environment

    env, _ = prepare_environment({**given, "ETL_VAR_DIR": str(tmp_path)}, tmp_path)
    assert fake_embedded.started == started
    assert env.get("REDIS_URL") == redis_url
    assert env.get("CELERY_BROKER_URL") == given.get("CELERY_BROKER_URL")
    settings = Settings.from_env(env)  # what every process of `etl-app run` reads: it starts
    assert settings.broker_is_rabbitmq == is_rabbitmq(given.get("CELERY_BROKER_URL", ""))
