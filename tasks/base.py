"""The one base task: it owns the transaction, the retry policy and the delivery counter."""

from __future__ import annotations

import logging
import random
import traceback
from typing import Any

from celery import Task
from celery.exceptions import Retry
from celery.utils.time import get_exponential_backoff_interval

from etl_app import errors
from etl_app.pipeline.messages import publish_chunks, publish_dead_letters
from etl_app.runtime import Runtime

log = logging.getLogger(__name__)


class EtlTask(Task):
    """Base of every etl_app task.

    Exceptions are sorted once by :func:`etl_app.errors.classify`:
    - transient ones retry with Celery's exponential backoff plus jitter, at most
      ``ETL_TRANSIENT_MAX_RETRIES`` times (per error type: ``ETL_RETRY_BUDGETS``, e.g.
      ``persistence=10``); after that the task gives up quietly and its
      records stay ``received`` in the outbox, where the sweeper re-drives them later;
    - anything else at chunk level is split: a chunk of several records is bisected into two
      new chains, so a single bad record is isolated and dead-lettered with its traceback.
    A Redis counter per message counts deliveries: a message delivered more than
    ``ETL_MAX_DELIVERIES`` times (it keeps killing its worker) is split or dead-lettered the
    same way instead of looping.
    """

    abstract = True
    typing = False

    @property
    def runtime(self) -> Runtime:
        return self.app.etl

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        chunk = args[0] if args else None
        if self._deliveries() > self.runtime.settings.max_deliveries and isinstance(chunk, dict):
            self._split_or_bury(
                chunk,
                errors.INTERNAL,
                f"delivered more than {self.runtime.settings.max_deliveries} times without "
                f"finishing (the worker running it was lost each time)",
                None,
            )
            return None
        try:
            return super().__call__(*args, **kwargs)
        except Retry:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one place errors are mapped
            return self._handle(exc, chunk)

    # -- retry policy ---------------------------------------------------------------------

    def backoff(self, retries: int) -> float:
        """Celery's exponential backoff (factor and cap from settings), with equal jitter."""
        s = self.runtime.settings
        interval = get_exponential_backoff_interval(
            s.retry_backoff_seconds, retries, s.retry_backoff_max_seconds, full_jitter=False
        )
        return interval / 2 + random.uniform(0, interval / 2)

    def _handle(self, exc: Exception, chunk: Any) -> Any:
        kind = errors.classify(exc)
        if issubclass(kind, errors.TransientError):
            budget = self.runtime.settings.max_retries(kind.error_type)
            if self.request.retries < budget:
                countdown = self.backoff(self.request.retries)
                log.warning("%s: %s; retry %d/%d in %.1fs", self.name, exc, self.request.retries + 1, budget, countdown)
                raise self.retry(exc=exc, countdown=countdown, max_retries=budget)
            log.error("%s: %s; retries exhausted, records stay in the outbox for the sweeper", self.name, exc)
            return None
        if not isinstance(chunk, dict):
            raise exc
        self._split_or_bury(chunk, kind.error_type, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return None

    # -- splitting and dead letters -------------------------------------------------------

    def _split_or_bury(self, chunk: dict, error_type: str, error: str, tb: str | None) -> None:
        ids = chunk_ids(chunk)
        record_type = chunk.get("type")
        if not ids or record_type is None:
            log.error("%s: unusable message dropped: %s", self.name, error)
            return
        if len(ids) > 1:
            half = len(ids) // 2
            log.warning("%s: %s; splitting a chunk of %d to isolate the cause", self.name, error, len(ids))
            for part in (ids[:half], ids[half:]):
                self.republish(record_type, part)
            return
        self.send_dead_letters(record_type, [{"id": ids[0], "error_type": error_type, "error": error, "traceback": tb}])

    def republish(self, record_type: str, ids: list[int], *, countdown: float | None = None, **extra: Any) -> None:
        """Send these raw records through a new chain (from validate), in chunks."""
        s = self.runtime.settings
        publish_chunks(self.app, record_type, ids, s.chunk_size, countdown=countdown, **extra)

    def send_dead_letters(self, record_type: str, failures: list[dict]) -> None:
        if failures:
            publish_dead_letters(self.app, record_type, failures, self.name)

    def _deliveries(self) -> int:
        """How many times this message (this retry of it) was delivered; 0 if Redis is unavailable."""
        key = f"{self.runtime.settings.broker_key_prefix}etl:deliveries:{self.request.id}:{self.request.retries}"
        try:
            pipe = self.runtime.cache.pipeline()
            pipe.incr(key)
            pipe.expire(key, 86400)
            return int(pipe.execute()[0])
        except Exception as exc:  # noqa: BLE001 - a cache error is a miss
            log.debug("delivery counter unavailable: %s", exc)
            return 0


def chunk_ids(chunk: dict) -> list[int]:
    """The raw-record ids a chunk message stands for (every form carries them)."""
    return [int(i) for i in chunk.get("ids") or ()]
