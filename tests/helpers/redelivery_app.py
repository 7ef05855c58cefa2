"""The app's Celery app, logging every message the broker delivered again, for tests/helpers/partition.py.

Start a worker with ``-A tests.helpers.redelivery_app:celery`` and the repository on PYTHONPATH.
Before a task runs, a message whose ``delivery_info`` says ``redelivered`` (RabbitMQ: given back
after a consumer's connection closed with it unacknowledged; Redis: put back on its queue after the
visibility timeout) is logged as ``Task <name>[<id>] redelivered by the broker``. Nothing else
changes.
"""

from __future__ import annotations

import logging

from celery.signals import task_prerun

from wsgi import app, celery  # noqa: F401  (the -A target)

log = logging.getLogger(__name__)


@task_prerun.connect
def _log_redelivered(task_id=None, task=None, **_kwargs) -> None:
    if task is not None and (task.request.delivery_info or {}).get("redelivered"):
        log.warning("Task %s[%s] redelivered by the broker", task.name, task_id)
