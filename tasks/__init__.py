"""Celery tasks: the pipeline stages, the dead-letter consumer and the beat jobs. A worker
imports the task modules by name (``etl_app.runtime.celery_app.TASK_MODULES``)."""
