"""The base of every etl_app task: the unit of work and the retry policy.

Who owns the transaction: this base class. Each task call gets one unit of work: ``self.db`` is
a connection in a transaction, opened on first use (a call that needs no database takes no
connection); ``self.after_commit(send)`` holds a message until that transaction has committed.
When the task body returns, the base commits and then sends; when it raises, the base rolls
back, drops what was held and maps the exception. Domain functions (``etl_app.pipeline``,
``etl_app.dead_letters``, ``etl_app.ingest.claim``) take the connection and never commit; task
bodies never open a transaction of their own. A task that works in batches (the sweeper) may
call ``self.commit()`` between them.

What an exception becomes is decided here, once, by :func:`etl_app.errors.classify`: a transient
error retries with backoff; a permanent one goes to :meth:`EtlTask.on_permanent_failure`, which a
task class overrides to settle what its message was about (``tasks/uploads.py`` fails the
upload). The tasks that work on chunks of raw records (the pipeline stages, the dead-letter
consumer) build on :class:`tasks.chunks.ChunkTask`, whose hook splits the chunk or dead-letters
its one record.
"""

from __future__ import annotations

import logging
import random
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from celery import Task
from celery.exceptions import Retry
from celery.utils.time import get_exponential_backoff_interval

from etl_app import errors, logs
from etl_app.names import QUEUES
from etl_app.runtime import Runtime

log = logging.getLogger(__name__)

# The shortest countdown a retry or a delayed chain is given: RabbitMQ's native delayed delivery
# counts whole seconds, and Celery refuses a countdown that rounds down to 0 there
# (``kombu.transport.native_delayed_delivery.calculate_routing_key``).
MIN_COUNTDOWN_SECONDS = 1.0


def delivered_queue(delivery_info: dict | None) -> str | None:
    """The queue a message was delivered from, read off its routing key: the queue's name (our
    queues' routing keys are their names), after the ``0.1.…`` prefix of a delay on RabbitMQ; None
    for a routing key that names none of them."""
    routing_key = (delivery_info or {}).get("routing_key") or ""
    name = routing_key.rpartition(".")[2]
    return name if name in QUEUES else None


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


@dataclass(frozen=True)
class PermanentFailure:
    """Why a task call failed for good, as :meth:`EtlTask.on_permanent_failure` receives it.

    ``error_type``: one of :mod:`etl_app.errors`' error types (what ``dead_letters.error_type``
    stores); ``error``: one line, ``<exception class>: <message>``; ``traceback``: the formatted
    traceback; ``exc``: the exception. A message delivered more than ``ETL_MAX_DELIVERIES`` times
    has neither traceback nor exception: its body was not run again."""

    error_type: str
    error: str
    traceback: str | None = None
    exc: Exception | None = None


class EtlTask(Task):
    """Base of every etl_app task: one unit of work per call (see the module docstring) and the
    retry policy.

    Exceptions are sorted once by :func:`etl_app.errors.classify`:
    - transient ones retry with Celery's exponential backoff plus jitter, at most
      ``ETL_TRANSIENT_MAX_RETRIES`` times (per error type: ``ETL_RETRY_BUDGETS``, e.g.
      ``persistence=10``); after that the task gives up quietly (its records stay ``received``
      in the outbox, where the sweeper re-drives them later). A task with
      ``retries_transient_errors = False`` (the beat jobs) gives up at once: beat runs it again;
    - anything else is permanent and goes to :meth:`on_permanent_failure`.
    A message that is a JSON object (a chunk, an upload's) has its deliveries counted in Redis: one
    delivered more than ``ETL_MAX_DELIVERIES`` times (it keeps killing its worker) goes to
    :meth:`on_permanent_failure` too instead of running again.
    """

    abstract = True
    typing = False
    retries_transient_errors = True

    @property
    def runtime(self) -> Runtime:
        return self.app.etl

    # -- the unit of work -------------------------------------------------------------------

    @property
    def unit(self) -> UnitOfWork:
        """This call's unit of work (only inside a task call)."""
        stack = getattr(_units, "stack", None)
        if not stack:
            raise RuntimeError(f"{self.name}: no unit of work outside a task call")
        return stack[-1]

    @property
    def db(self) -> sa.Connection:
        """The connection of this call's transaction (committed by the base when the body returns)."""
        return self.unit.connection

    def after_commit(self, send: Callable[[], Any]) -> None:
        """Run ``send`` once this call's transaction has committed (dropped if it rolls back)."""
        self.unit.after_commit(send)

    def commit(self) -> None:
        """Commit now and run the held sends; later statements start a new transaction."""
        self.unit.commit()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        message = args[0] if args else None
        record_type = message.get("type") if isinstance(message, dict) else None
        log_context = logs.bind(record_type=record_type if isinstance(record_type, str) else None)
        unit = UnitOfWork(self.runtime.engine)
        stack = _units.__dict__.setdefault("stack", [])
        stack.append(unit)
        try:
            max_deliveries = self.runtime.settings.max_deliveries
            if isinstance(message, dict) and self.deliveries() > max_deliveries:
                self.on_permanent_failure(
                    message,
                    PermanentFailure(
                        errors.INTERNAL,
                        f"delivered more than {max_deliveries} times without finishing "
                        f"(the worker running it was lost each time)",
                    ),
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

    def deliveries(self) -> int:
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

    # -- the retry policy -------------------------------------------------------------------

    def backoff(self, retries: int) -> float:
        """Celery's exponential backoff (factor and cap from settings), with equal jitter; at
        least :data:`MIN_COUNTDOWN_SECONDS`."""
        settings = self.runtime.settings
        interval = get_exponential_backoff_interval(
            settings.retry_backoff_seconds, retries, settings.retry_backoff_max_seconds, full_jitter=False
        )
        return max(MIN_COUNTDOWN_SECONDS, interval / 2 + random.uniform(0, interval / 2))

    def retry(self, *args: Any, **kwargs: Any) -> Retry:
        """Celery's ``retry``, back on the queue the message came from. Celery sends a retry where
        the message's delivery says; but on RabbitMQ a countdown goes through the native delayed
        delivery exchanges, which route by the task's configured queue (``etl`` for every
        ``etl.*`` task), so a retry of the enrich stage of a type with lookups would leave the
        ``lookups`` queue. The queue is named here, for both brokers."""
        queue = delivered_queue(self.request.delivery_info)
        if queue is not None:
            kwargs.setdefault("queue", queue)
        return super().retry(*args, **kwargs)

    def _handle(self, exc: Exception, message: Any) -> Any:
        kind = errors.classify(exc)
        if issubclass(kind, errors.TransientError):
            if not self.retries_transient_errors:
                log.warning("%s: %s; next run", self.name, exc)
                return None
            budget = self.runtime.settings.max_retries(kind.error_type)
            if self.request.retries < budget:
                countdown = self.backoff(self.request.retries)
                self.before_retry(message, countdown)
                log.warning("%s: %s; retry %d/%d in %.1fs", self.name, exc, self.request.retries + 1, budget, countdown)
                raise self.retry(exc=exc, countdown=countdown, max_retries=budget)
            log.error("%s: %s; retries exhausted, records stay in the outbox for the sweeper", self.name, exc)
            return None
        failure = PermanentFailure(kind.error_type, f"{type(exc).__name__}: {exc}", traceback.format_exc(), exc)
        self.on_permanent_failure(message, failure)
        return None

    # -- what a subclass overrides ----------------------------------------------------------

    def before_retry(self, message: Any, countdown: float) -> None:
        """Called just before this call is retried in ``countdown`` seconds: by the retry policy
        after a transient error (this call's transaction is rolled back already), or by a task
        body that is about to call ``self.retry`` itself. Does nothing here;
        :class:`tasks.chunks.ChunkTask` extends the lease of its chunk's records."""

    def on_permanent_failure(self, message: Any, failure: PermanentFailure) -> None:
        """Settle a call that failed for good: ``message`` is the call's first argument (None if it
        had none), ``failure`` says why. The call's transaction is over (rolled back, its held
        sends dropped): what the hook writes it writes in a transaction of its own
        (``self.runtime.engine.begin()``), what it sends it sends at once. Returning ends the call
        quietly (the message is acknowledged).

        Here the exception is raised again, so the call fails as Celery shows failures (the
        worker's log, Flower); a message delivered too often is dropped with an error in the log.
        Overridden by :class:`tasks.chunks.ChunkTask` (split the chunk or dead-letter its record)
        and by ``ParseTask`` in ``tasks/uploads.py`` (fail the upload)."""
        if failure.exc is not None:
            raise failure.exc
        log.error("%s: message dropped (%s): %s", self.name, failure.error, str(message)[:200])
