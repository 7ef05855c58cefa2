"""Celery settings: plain lowercase names, read from the environment; imports nothing of the project.

The queue and task names are those of ``etl_app/names.py``, spelled again here; a test checks
that every task named in the routes and the beat schedule is registered.
"""

import os

from celery.schedules import crontab
from kombu import Exchange, Queue

broker_url = os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
result_backend = None  # pipeline results are never read
task_ignore_result = True
result_expires = 3600

# JSON only: pickle in accept_content is remote code execution.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# At-least-once delivery; every stage is idempotent.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = int(os.environ.get("CELERY_PREFETCH_MULTIPLIER", "1"))
worker_max_tasks_per_child = int(os.environ.get("CELERY_MAX_TASKS_PER_CHILD", "10000"))
worker_max_memory_per_child = int(os.environ.get("CELERY_MAX_MEMORY_PER_CHILD_KB", "512000"))
task_time_limit = int(os.environ.get("CELERY_TASK_TIME_LIMIT", "600"))
task_soft_time_limit = int(os.environ.get("CELERY_TASK_SOFT_TIME_LIMIT", "540"))

broker_connection_retry_on_startup = True
broker_connection_timeout = 2
worker_cancel_long_running_tasks_on_connection_loss = False

QUEUE_NAMES = (
    "etl",
    "dead_letter",
    # beat's jobs: the pipeline workers consume it beside etl, so a long etl queue never holds
    # back (or expires) the sweeper that rescues lost records
    "jobs",
    # the enrich stage of record types with external lookups (etl_app/names.py LOOKUPS_QUEUE):
    # a hanging provider holds only the Procfile's lookups worker
    "lookups",
    # the slices of uploaded files (etl_app/names.py UPLOADS_QUEUE)
    "uploads",
)
RABBITMQ_SCHEMES = ("amqp", "amqps", "pyamqp")
RABBITMQ_HEARTBEAT_SECONDS = 20


def is_rabbitmq(url: str) -> bool:
    """A RabbitMQ (AMQP) broker URL; anything else is taken for Redis."""
    return url.partition("://")[0].lower() in RABBITMQ_SCHEMES


def broker_settings(url: str, key_prefix: str = "") -> dict:
    """The settings that depend on the broker (``make_celery`` applies them for the URL it is given).

    Redis: direct exchanges; the visibility timeout (a message delivered and not acknowledged is
    delivered again after it: countdowns, backoffs and time limits stay well below it), socket
    timeouts, and ``global_keyprefix`` (ETL_BROKER_KEY_PREFIX) that keeps several deployments
    apart on one Redis.

    RabbitMQ: quorum queues (replicated, survive a node restart); topic exchanges, which Celery's
    native delayed delivery needs: a countdown waits in RabbitMQ's ``celery_delayed_*`` queues, not
    in a worker (with quorum queues the prefetch is per consumer and fixed, so a countdown held in a
    worker would hold one of its slots); ``worker_detect_quorum_queues`` turns global QoS off,
    which quorum queues refuse; publisher confirms (a publish returns once RabbitMQ has the message,
    or raises); AMQP heartbeats every 20 s on the worker's connection (Celery's default is 120 s),
    so a dead connection is noticed and its unacknowledged messages are delivered again soon. Deployments
    are kept apart by the virtual host of the URL; the Redis options are not passed."""
    if is_rabbitmq(url):
        quorum = {"x-queue-type": "quorum"}
        return {
            "task_queues": tuple(
                Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=quorum)
                for name in QUEUE_NAMES
            ),
            "broker_transport_options": {"confirm_publish": True},
            "broker_heartbeat": RABBITMQ_HEARTBEAT_SECONDS,
            "worker_detect_quorum_queues": True,
            "broker_native_delayed_delivery_queue_type": "quorum",
        }
    visibility_timeout = int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600"))
    options = {
        "visibility_timeout": visibility_timeout,
        # The lock a worker takes to put such messages back (kombu's default: held up to 300 s). A
        # worker cut off while it holds it keeps every other worker from restoring anything until
        # it expires: with a visibility timeout shorter than that, the cut host's messages would
        # wait for the lock, not for the timeout. Never longer than the visibility timeout.
        "unacked_mutex_expire": min(300, visibility_timeout),
        "socket_timeout": 10,
        "socket_connect_timeout": 2,
        "retry_on_timeout": False,
    }
    # how often a worker looks for delivered messages past the visibility timeout and puts them
    # back on their queue (kombu's default: about every 100 seconds)
    if os.environ.get("CELERY_UNACKED_RESTORE_SECONDS"):
        options["unacked_restore_interval"] = int(os.environ["CELERY_UNACKED_RESTORE_SECONDS"])
        options["unacked_restore_throttle"] = 1
    if key_prefix:
        options["global_keyprefix"] = key_prefix
    return {
        "task_queues": tuple(Queue(name, Exchange(name), routing_key=name) for name in QUEUE_NAMES),
        "broker_transport_options": options,
    }


# this module's own broker (CELERY_BROKER_URL, else REDIS_URL); make_celery applies the same
# function again for the URL of the settings it is given
globals().update(broker_settings(broker_url, os.environ.get("ETL_BROKER_KEY_PREFIX", "").strip()))

task_default_queue = "etl"
task_routes = {
    "etl.dead_letter.*": {"queue": "dead_letter"},
    "etl.beat.*": {"queue": "jobs"},
    "etl.upload.*": {"queue": "uploads"},
    "etl.*": {"queue": "etl"},
}

worker_send_task_events = True
task_send_sent_event = True
worker_hijack_root_logger = False


def job_schedule(expression: str) -> crontab | float:
    """A schedule as written in ETL_SCHEDULE_*: a crontab expression "m h dom mon dow" (UTC), or a
    number of seconds (every that many seconds, for tests and tight loops)."""
    try:
        return float(expression)
    except ValueError:
        pass
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"a job schedule is 'minute hour day-of-month month day-of-week' or seconds: {expression!r}")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(minute, hour, day_of_week, day_of_month, month_of_year)


# The scheduled jobs (etl_app/jobs/registry.py): job name → (variable, default schedule). Beat and
# the operator's `etl-app jobs list` both read them from here. Times are UTC (enable_utc).
JOB_SCHEDULES = {
    "re-enrich": ("ETL_SCHEDULE_RE_ENRICH", "30 2 * * *"),
    "daily-quality": ("ETL_SCHEDULE_DAILY_QUALITY", "20 0 * * *"),
    "tutor-rollups": ("ETL_SCHEDULE_TUTOR_ROLLUPS", "10 * * * *"),
    "retention": ("ETL_SCHEDULE_RETENTION", "30 3 * * *"),
    "lookup-refresh": ("ETL_SCHEDULE_LOOKUP_REFRESH", "60"),
}


def job_schedule_expression(job: str) -> str:
    variable, default = JOB_SCHEDULES[job]
    return os.environ.get(variable, "").strip() or default


enable_utc = True
timezone = "UTC"
beat_schedule = {
    "outbox-sweeper": {
        "task": "etl.beat.outbox-sweeper",
        "schedule": float(os.environ.get("ETL_SWEEP_INTERVAL_SECONDS", "60")),
        "options": {"queue": "jobs", "expires": float(os.environ.get("ETL_SWEEP_INTERVAL_SECONDS", "60"))},
    },
    **{
        job: {
            "task": f"etl.beat.{job}",
            "schedule": job_schedule(job_schedule_expression(job)),
            "options": {"queue": "jobs"},
        }
        for job in JOB_SCHEDULES
    },
}
