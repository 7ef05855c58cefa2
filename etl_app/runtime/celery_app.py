"""Build the Celery app from celeryconfig.py plus the resolved settings."""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import before_task_publish, celeryd_after_setup, setup_logging, worker_process_init

from etl_app import logs
from etl_app.pipeline.messages import stamp_sent_at
from etl_app.runtime import redis_broker_close, stage_metrics

CELERY_CONFIG_MODULE = "celeryconfig"
# The task modules, registered by name: a worker imports them at its start (Celery's ``include``),
# while a process that only sends (web, CLI, beat) sends by task name and never imports them.
TASK_MODULES = ("tasks.pipeline", "tasks.dead_letter", "tasks.beat", "tasks.uploads")


def make_celery(name: str, broker_url: str, key_prefix: str = "") -> Celery:
    """``key_prefix`` (ETL_BROKER_KEY_PREFIX) keeps several deployments apart on one Redis."""
    redis_broker_close.install()  # a broker restart must not stop a worker: see that module
    app = Celery(name, set_as_current=True, include=list(TASK_MODULES))
    app.config_from_object(CELERY_CONFIG_MODULE)
    app.conf.broker_url = broker_url
    if key_prefix:
        app.conf.broker_transport_options = {**app.conf.broker_transport_options, "global_keyprefix": key_prefix}
    return app


before_task_publish.connect(stamp_sent_at, weak=False)
stage_metrics.connect()  # task durations, into Redis: see etl_app.runtime.stage_metrics


@worker_process_init.connect
def _reset_connections_in_child(**_kwargs) -> None:
    from celery import current_app

    runtime = getattr(current_app, "etl", None)
    if runtime is not None:
        runtime.reset_after_fork()


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
