"""Celery tasks: the pipeline stages, the dead-letter consumer and the beat jobs."""

from tasks import beat, dead_letter, pipeline, uploads  # noqa: F401  (register the shared tasks)
