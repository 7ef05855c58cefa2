"""The one base task: it owns the transaction, the retry policy and the delivery counter.

Who owns the transaction: this base class, as in warehouse. Each task call gets one unit of work:
``self.db`` is a connection in a transaction, opened on first use (a call that needs no database
takes no connection); ``self.after_commit(send)`` holds a message until that transaction has
committed. When the task body returns, the base commits and then sends; when it raises, the base
rolls back, drops what was held and maps the exception. Domain functions (``etl_app.pipeline``,
``etl_app.deadletters``, ``etl_app.ingest.claim``) take the connection and never commit; task
bodies never open a transaction of their own. A task that works in batches (the sweeper) may
call ``self.commit()`` between them.
"""

from __future__ import annotations

import logging
import random
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from celery import Task
from celery.exceptions import Retry
from celery.utils.time import get_exponential_backoff_interval

from etl_app import errors, logs
from etl_app.deadletters.store import Failure
from etl_app.ingest import claim, settle
from etl_app.pipeline.messages import UnreadableMessage, publish_chunks, publish_dead_letters, read_chunk
from etl_app.runtime import Runtime

log = logging.getLogger(__name__)


class UnitOfWork:
    """One task call's transaction and the sends it holds until that transaction commits."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._conn: sa.Connection | None = None
        self._held: list[Callable[[], Any]] = []

    @property
    def connection(self) -> sa.Connection:
        if self._conn is None:
            self._conn = self.engine.connect()  # autobegins at the first statement
        return self._conn

    def after_commit(self, send: Callable[[], Any]) -> None:
        self._held.append(send)

    def commit(self) -> None:
        """Commit what was done so far, then run the held sends in order."""
        if self._conn is not None:
            self._conn.commit()
        held, self._held = self._held, []
        for send in held:
            send()

    def close(self) -> None:
        """Roll back anything uncommitted and give the connection back."""
        self._held.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_units = threading.local()  # a stack per thread: a pool process or thread runs one call at a time


class EtlTask(Task):
    """Base of every etl_app task.

    Exceptions are sorted once by :func:`etl_app.errors.classify`:
    - transient ones retry with Celery's exponential backoff plus jitter, at most
      ``ETL_TRANSIENT_MAX_RETRIES`` times (per error type: ``ETL_RETRY_BUDGETS``, e.g.
      ``persistence=10``); after that the task gives up quietly and its records stay
      ``received`` in the outbox, where the sweeper re-drives them later. A task with
      ``retries_transient_errors = False`` (the sweeper) gives up at once: beat runs it again;
    - anything else at chunk level is split: a chunk of several records is bisected into two
      new chains, so a single bad record is isolated and dead-lettered with its traceback.
    A Redis counter per message counts deliveries: a message delivered more than
    ``ETL_MAX_DELIVERIES`` times (it keeps killing its worker) is split or dead-lettered the
    same way instead of looping.
    """

    abstract = True
    typing = False
    retries_transient_errors = True

    @property
    def runtime(self) -> Runtime:
        return self.app.etl

    # -- the unit of work -------------------------------------------------------------------

    @property
    def _unit(self) -> UnitOfWork:
        stack = getattr(_units, "stack", None)
        if not stack:
            raise RuntimeError(f"{self.name}: no unit of work outside a task call")
        return stack[-1]

    @property
    def db(self) -> sa.Connection:
        """The connection of this call's transaction (committed by the base when the body returns)."""
        return self._unit.connection

    def after_commit(self, send: Callable[[], Any]) -> None:
        """Run ``send`` once this call's transaction has committed (dropped if it rolls back)."""
        self._unit.after_commit(send)

    def commit(self) -> None:
        """Commit now and run the held sends; later statements start a new transaction."""
        self._unit.commit()

    def settle_after_commit(self, *, ingestion_ids: Iterable[Any] = (), raw_ids: Iterable[int] = ()) -> None:
        """Once this call's transaction has committed, store the quality of those of these ingestions
        (or of these raw records' ingestions) that have settled (:mod:`etl_app.ingest.settle`), on
        this call's connection. Checking is one indexed query; a failure is logged, never the task's."""
        ingestion_ids, raw_ids = sorted(set(ingestion_ids)), sorted(set(raw_ids))
        if ingestion_ids or raw_ids:
            runtime, unit = self.runtime, self._unit
            self.after_commit(
                lambda: settle.settle_quietly(
                    unit.connection, runtime.registry, runtime.settings, ingestion_ids=ingestion_ids, raw_ids=raw_ids
                )
            )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        message = args[0] if args else None
        record_type = message.get("type") if isinstance(message, dict) else None
        log_context = logs.bind(record_type=record_type if isinstance(record_type, str) else None)
        unit = UnitOfWork(self.runtime.engine)
        stack = _units.__dict__.setdefault("stack", [])
        stack.append(unit)
        try:
            if self._deliveries() > self.runtime.settings.max_deliveries and isinstance(message, dict):
                self._split_or_dead_letter(
                    message,
                    errors.INTERNAL,
                    f"delivered more than {self.runtime.settings.max_deliveries} times without "
                    f"finishing (the worker running it was lost each time)",
                    None,
                )
                return None
            result = super().__call__(*args, **kwargs)
            unit.commit()
            return result
        except Retry:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one place errors are mapped
            unit.close()
            return self._handle(exc, message)
        finally:
            unit.close()
            stack.pop()
            logs.unbind(log_context)

    # -- retry policy ---------------------------------------------------------------------

    def backoff(self, retries: int) -> float:
        """Celery's exponential backoff (factor and cap from settings), with equal jitter."""
        settings = self.runtime.settings
        interval = get_exponential_backoff_interval(
            settings.retry_backoff_seconds, retries, settings.retry_backoff_max_seconds, full_jitter=False
        )
        return interval / 2 + random.uniform(0, interval / 2)

    def _handle(self, exc: Exception, message: Any) -> Any:
        kind = errors.classify(exc)
        if issubclass(kind, errors.TransientError):
            if not self.retries_transient_errors:
                log.warning("%s: %s; next run", self.name, exc)
                return None
            budget = self.runtime.settings.max_retries(kind.error_type)
            if self.request.retries < budget:
                countdown = self.backoff(self.request.retries)
                self._lease_for_retry(message, countdown)
                log.warning("%s: %s; retry %d/%d in %.1fs", self.name, exc, self.request.retries + 1, budget, countdown)
                raise self.retry(exc=exc, countdown=countdown, max_retries=budget)
            log.error("%s: %s; retries exhausted, records stay in the outbox for the sweeper", self.name, exc)
            return None
        if not isinstance(message, dict):
            raise exc
        self._split_or_dead_letter(message, kind.error_type, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return None

    def _lease_for_retry(self, message: Any, countdown: float) -> None:
        """Best effort: the chunk's records wait for this retry, so their lease runs from when it
        is due. If the database cannot take it (it may be why the task failed), a sweeper may
        re-send them meanwhile: a duplicate chain, which changes nothing.

        This call's transaction ends first (committed; after an error it is rolled back already):
        a lease it renewed (``hold_lease``) holds the rows updated here through another connection,
        which would otherwise wait for this very task for ever."""
        self.commit()
        try:
            ids = read_chunk(message).ids
            if ids:
                with self.runtime.engine.begin() as conn:
                    claim.refresh_lease(conn, ids, ahead=countdown)
        except Exception as exc:  # noqa: BLE001 - the retry goes ahead regardless
            log.debug("%s: lease not extended for the retry: %s", self.name, exc)

    # -- splitting and dead letters -------------------------------------------------------

    def _split_or_dead_letter(self, message: dict, error_type: str, error: str, tb: str | None) -> None:
        """Bisect a failing chunk into two new chains, or dead-letter its one record."""
        try:
            chunk = read_chunk(message)
        except UnreadableMessage as exc:
            log.error("%s: unusable message dropped (%s): %s", self.name, error, exc)
            return
        if not chunk.ids:
            log.error("%s: a chunk without records dropped: %s", self.name, error)
            return
        if len(chunk.ids) > 1:
            half = len(chunk.ids) // 2
            log.warning("%s: %s; splitting a chunk of %d to isolate the cause", self.name, error, len(chunk.ids))
            for part in (chunk.ids[:half], chunk.ids[half:]):
                self.republish(chunk.type_name, part)
            return
        self.send_dead_letters(chunk.type_name, [Failure(chunk.ids[0], error_type, error, tb)])

    def republish(
        self, type_name: str, ids: list[int], *, countdown: float | None = None, parent_retries: int = 0
    ) -> None:
        """Send these raw records through a new chain (from validate), in chunks."""
        publish_chunks(
            self.app,
            type_name,
            ids,
            self.runtime.settings.chunk_size,
            countdown=countdown,
            parent_retries=parent_retries,
        )

    def send_dead_letters(self, type_name: str, failures: list[Failure]) -> None:
        if failures:
            publish_dead_letters(self.app, type_name, [f.to_message() for f in failures], self.name)

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
