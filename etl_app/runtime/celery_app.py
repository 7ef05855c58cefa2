"""Build the Celery app from celeryconfig.py plus the resolved settings."""

from __future__ import annotations

import logging
import os
import warnings

from amqp.exceptions import AMQPError
from celery import Celery
from celery.signals import (
    before_task_publish,
    celeryd_after_setup,
    celeryd_init,
    setup_logging,
    task_received,
    worker_init,
    worker_process_init,
)
from kombu.exceptions import KombuError

import celeryconfig
from etl_app import logs
from etl_app.config import ROOT_NOTED_ENV, is_rabbitmq
from etl_app.names import LOOKUPS_QUEUE, PIPELINE_QUEUE
from etl_app.pipeline.messages import stamp_sent_at
from etl_app.pipeline.queue_head import delivered_from
from etl_app.runtime import pool_partial_reads, redis_broker_close, stage_metrics

CELERY_CONFIG_MODULE = "celeryconfig"
# The task modules, registered by name: a worker imports them at its start (Celery's ``include``),
# while a process that only sends (web, CLI, beat) sends by task name and never imports them.
TASK_MODULES = ("tasks.pipeline", "tasks.dead_letter", "tasks.beat", "tasks.uploads")


def make_celery(name: str, broker_url: str, key_prefix: str = "") -> Celery:
    """The app on ``broker_url``, with celeryconfig's settings for that broker (Redis or RabbitMQ:
    ``celeryconfig.broker_settings``). ``key_prefix`` (ETL_BROKER_KEY_PREFIX) keeps several
    deployments apart on one Redis; on RabbitMQ the virtual host of the URL does."""
    redis_broker_close.install()  # a broker restart must not stop a worker: see that module
    pool_partial_reads.install()  # nor a connection lost while a large result is read: see that module
    app = Celery(name, set_as_current=True, include=list(TASK_MODULES))
    app.config_from_object(CELERY_CONFIG_MODULE)
    app.conf.update(broker_url=broker_url, **celeryconfig.broker_settings(broker_url, key_prefix))
    return app


before_task_publish.connect(stamp_sent_at, weak=False)
stage_metrics.connect()  # task durations, into Redis: see etl_app.runtime.stage_metrics


@celeryd_init.connect
def _root_warning_said_by_the_launcher(**_kwargs) -> None:
    """Under `etl-app run` as root, its banner says once that the workers run as root; Celery's
    own warning (sent just after this signal, "You're running the worker with superuser
    privileges") would repeat it for each worker. Anywhere else (systemd, a container) it stands."""
    if os.environ.get(ROOT_NOTED_ENV) == "1":
        from celery.exceptions import SecurityWarning

        warnings.filterwarnings("ignore", message="You're running the worker with superuser", category=SecurityWarning)


@worker_process_init.connect
def _reset_connections_in_child(**_kwargs) -> None:
    from celery import current_app

    runtime = getattr(current_app, "etl", None)
    if runtime is not None:
        runtime.reset_after_fork()


@task_received.connect
def _record_queue_head(sender=None, request=None, **_kwargs) -> None:
    """On RabbitMQ, the worker's consumer notes the send time of each message it takes from the
    ``etl`` and ``lookups`` queues: the queue's head, which the outbox sweeper reads (see
    :mod:`etl_app.pipeline.queue_head`). In memory here; a thread writes it to Redis once a second.
    On Redis the sweeper reads the queue itself and nothing is recorded."""
    runtime = getattr(getattr(sender, "app", None), "etl", None)
    if runtime is None or request is None or not runtime.settings.broker_is_rabbitmq:
        return
    seen = delivered_from(request.delivery_info, request.request_dict, (PIPELINE_QUEUE, LOOKUPS_QUEUE))
    if seen is not None:
        runtime.queue_heads.observe(*seen)


@worker_init.connect
def _declare_every_queue_on_rabbitmq(sender=None, **_kwargs) -> None:
    """On RabbitMQ a worker declares every queue of the app at its start, not only those it
    consumes. Celery's native delayed delivery binds every queue of the app to its delay
    exchanges when a worker connects; a queue no worker has declared yet (``lookups``, when the
    pipeline worker starts first on a new vhost) fails that binding, and Celery logs that delayed
    delivery is unavailable. Queues and exchanges are durable: once declared they stay."""
    app = getattr(sender, "app", None)
    if app is None or not is_rabbitmq(app.conf.broker_url or ""):
        return
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            for queue in app.amqp.queues.values():
                queue.bind(conn.channel()).declare()
    except (OSError, AMQPError, KombuError) as exc:  # the broker down: each worker declares its own queues later
        logging.getLogger(__name__).warning("queues not declared at the worker's start: %s", exc)


@setup_logging.connect
def _setup_logging(loglevel=None, **_kwargs) -> None:
    """Worker and beat log through :mod:`etl_app.logs` (Celery then installs no handler of its own)."""
    logs.configure(loglevel)


@celeryd_after_setup.connect
def _quiet_banner_in_json(sender=None, instance=None, **_kwargs) -> None:
    """In JSON logs the worker's multi-line start banner (plain text on stdout) is one log line."""
    if instance is not None and logs.json_enabled():
        instance.quiet = True
        logging.getLogger("celery.apps.worker").info(
            "worker %s starting: queues %s, concurrency %s",
            sender,
            ",".join(sorted(instance.app.amqp.queues.consume_from or ())),
            instance.concurrency,
        )
