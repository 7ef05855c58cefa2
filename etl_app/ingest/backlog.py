"""Backpressure: the backlog of records received and not settled yet, and whether it is full.

The backlog is the outbox's ``received`` records (``raw_records.status``): accepted, not yet
persisted or dead. It is *full* when it holds more than ``ETL_BACKLOG_MAX_RECORDS`` records, or
when one of them was received more than ``ETL_BACKLOG_MAX_AGE_SECONDS`` ago (0 turns either bound
off). While it is full the submit and upload endpoints answer 429 ``backlog_full`` with a
``Retry-After`` (docs/backpressure.md).

**Cheap on the hot path.** A request reads this process's last reading (:class:`BacklogReader`),
never the database. The first request after the last reading is a second old starts a thread
that takes the next one; that request and the others go on with the last reading meanwhile. Only
a process's first reading, and the first after it served nothing for over :data:`OVERDUE_SECONDS`
(its last reading would be old), are waited for: a few milliseconds. A reading costs one
statement and one Redis round trip:

- the statement walks the partial index of unsettled records (``ix_raw_records_unsettled``) and
  stops after ``bound + what five minutes of draining settles + 1`` records (``LIMIT``): enough to
  tell the backlog is over its bound and by how much, up to the longest ``Retry-After`` (300 s),
  whatever the backlog holds. The same records give the age of the oldest and how many are too
  old. Past that limit the age is that of the oldest record counted (the count alone already
  says the backlog is full). With the record bound off the walk stops at :data:`AGE_ONLY_LIMIT`.
- the drain rate comes from per-second counters in the cache Redis, which the persist and
  dead-letter tasks add to after each commit (:func:`count_settled`): records settled per second
  over the last :data:`WINDOW_SECONDS` (from the first second that settled any, when the pipeline
  started within the window).

A reading that took long delays the next: the next is due after ``max(1 s, 10 × its duration)``,
so the check never keeps the database busy more than a tenth of the time, however large the
backlog (at the default bound of 1,000,000 records a full backlog's reading takes about a second:
the next is ten seconds later). A database that fails the reading leaves the last one in use for up to
:data:`STALE_SECONDS`, then none (the endpoints accept: the request itself tells a database
that is down). A Redis that fails leaves the drain rate unknown: ``Retry-After`` is then
:data:`DEFAULT_RETRY_SECONDS`, as with no record settled in the window.

Each web process reads for itself, so a backlog may overshoot its bound by what the web processes
accept in one second; a bound is a safety limit, not an exact quota.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import sqlalchemy as sa

from etl_app.config import Settings
from etl_app.models import sql

log = logging.getLogger(__name__)

RECORDS, AGE = "records", "age"  # why the backlog is full
WINDOW_SECONDS = 60  # the drain rate's window
MIN_RETRY_SECONDS, MAX_RETRY_SECONDS = 1, 300
DEFAULT_RETRY_SECONDS = 30  # Retry-After when nothing settled in the window (or Redis did not say)
REFRESH_SECONDS = 1.0  # a reading is reused this long at least
COST_FACTOR = 10  # ... and at least this many times what it took
OVERDUE_SECONDS = 5.0  # a reading due longer ago than this (the process served nothing) is waited for
STALE_SECONDS = 30.0  # a reading older than this is not used (the database failed the later ones)
AGE_ONLY_LIMIT = 1_000_000  # records counted when only the age bound is on

_READ = sql(
    "SELECT count(*), extract(epoch FROM now() - min(received_at)), "
    "count(*) FILTER (WHERE received_at < now() - make_interval(secs => :max_age)) "
    "FROM (SELECT received_at FROM raw_records WHERE status = :RECEIVED LIMIT :limit) AS unsettled"
)


@dataclass(frozen=True)
class Bounds:
    """``ETL_BACKLOG_MAX_RECORDS`` and ``ETL_BACKLOG_MAX_AGE_SECONDS``; 0 turns one off."""

    max_records: int
    max_age_seconds: int

    @classmethod
    def of(cls, settings: Settings) -> Bounds:
        return cls(settings.backlog_max_records, settings.backlog_max_age_seconds)

    @property
    def on(self) -> bool:
        return bool(self.max_records or self.max_age_seconds)


@dataclass(frozen=True)
class Backlog:
    """One reading. ``records``: counted up to ``limit`` (so "at least" when equal to it);
    ``oldest_seconds``: the age of the oldest record counted (None: none); ``too_old``: those
    counted that are over the age bound; ``drain_rate``: records settled per second over the last
    minute (None: Redis did not say)."""

    bounds: Bounds
    records: int
    limit: int
    oldest_seconds: float | None
    too_old: int
    drain_rate: float | None

    @property
    def reasons(self) -> list[str]:
        out = []
        if self.bounds.max_records and self.records > self.bounds.max_records:
            out.append(RECORDS)
        if self.bounds.max_age_seconds and self.too_old:
            out.append(AGE)
        return out

    @property
    def full(self) -> bool:
        return bool(self.reasons)

    @property
    def excess(self) -> int:
        """Records to settle before the backlog is within its bounds again (the too old ones
        first: records are mostly settled in the order received)."""
        over = self.records - self.bounds.max_records if RECORDS in self.reasons else 0
        return max(over, self.too_old if AGE in self.reasons else 0)

    @property
    def retry_after(self) -> int | None:
        """Seconds until the excess has drained at the recent rate, within [1, 300]; 30 when
        nothing settled in the window. None when the backlog is not full."""
        if not self.full:
            return None
        return retry_seconds(self.excess, self.drain_rate)

    def message(self) -> str:
        """Why it is full, in words (the 429's message, /ready's)."""
        parts = []
        if RECORDS in self.reasons:
            more = "at least " if self.records >= self.limit else ""
            parts.append(
                f"{more}{self.records} records are waiting to be processed, over the bound of "
                f"{self.bounds.max_records} (ETL_BACKLOG_MAX_RECORDS)"
            )
        if AGE in self.reasons:
            parts.append(
                f"the oldest record waiting was received {int(self.oldest_seconds or 0)} s ago, over the bound "
                f"of {self.bounds.max_age_seconds} s (ETL_BACKLOG_MAX_AGE_SECONDS)"
            )
        if not parts:
            return "the backlog is within its bounds"
        return f"the service is busy: {'; '.join(parts)}; retry in {self.retry_after} s"

    def as_dict(self) -> dict[str, Any]:
        """What /ready and the Overview page show, and the numbers of the 429's body."""
        return {
            "full": self.full,
            "reasons": self.reasons,
            "records": self.records,
            "oldest_seconds": None if self.oldest_seconds is None else round(self.oldest_seconds, 3),
            "settled_per_second": None if self.drain_rate is None else round(self.drain_rate, 3),
            "max_records": self.bounds.max_records,
            "max_age_seconds": self.bounds.max_age_seconds,
            "retry_after": self.retry_after,
        }


def retry_seconds(excess: int, rate: float | None) -> int:
    """``ceil(excess / rate)`` within [:data:`MIN_RETRY_SECONDS`, :data:`MAX_RETRY_SECONDS`];
    :data:`DEFAULT_RETRY_SECONDS` when the rate is 0 or unknown."""
    if not rate or rate <= 0:
        return DEFAULT_RETRY_SECONDS
    return min(MAX_RETRY_SECONDS, max(MIN_RETRY_SECONDS, math.ceil(excess / rate)))


def count_limit(bounds: Bounds, rate: float | None) -> int:
    """How many unsettled records a reading counts at most: the bound, plus what the longest
    Retry-After drains at ``rate`` (so that the excess is known up to it), plus one."""
    if not bounds.max_records:
        return AGE_ONLY_LIMIT
    return bounds.max_records + math.ceil((rate or 0) * MAX_RETRY_SECONDS) + 1


def read_backlog(conn: sa.Connection, bounds: Bounds, rate: float | None) -> Backlog:
    """One reading of the backlog (one statement; see the module's docstring)."""
    limit = count_limit(bounds, rate)
    records, oldest, too_old = conn.execute(_READ, {"limit": limit, "max_age": bounds.max_age_seconds}).one()
    return Backlog(
        bounds=bounds,
        records=int(records),
        limit=limit,
        oldest_seconds=None if oldest is None else max(0.0, float(oldest)),
        too_old=int(too_old) if bounds.max_age_seconds else 0,
        drain_rate=rate,
    )


# -- the drain rate: records settled per second, counted by the workers -----------------------


def _settled_key(prefix: str, second: int) -> str:
    return f"{prefix}etl:backlog:settled:{second}"


def count_settled(client: redis.Redis, prefix: str, n: int, now: float | None = None) -> None:
    """Add ``n`` records settled now to this second's counter (one round trip; the counter
    expires after two windows). For a task, after its commit: a Redis error is logged, never raised."""
    if n <= 0:
        return
    key = _settled_key(prefix, int(time.time() if now is None else now))
    try:
        pipe = client.pipeline(transaction=False)
        pipe.incrby(key, n)
        pipe.expire(key, 2 * WINDOW_SECONDS)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("backlog: %d settled records not counted: %s", n, exc)


def drain_rate(client: redis.Redis, prefix: str, now: float | None = None) -> float:
    """Records settled per second over the last :data:`WINDOW_SECONDS` whole seconds (from the
    first of them that settled any, at least 5 s: a pipeline started within the window is
    measured over the time it has run). Raises redis errors."""
    second = int(time.time() if now is None else now)
    seconds = range(second - WINDOW_SECONDS, second)
    counts = [int(v or 0) for v in client.mget([_settled_key(prefix, s) for s in seconds])]
    total = sum(counts)
    if not total:
        return 0.0
    first = next(i for i, n in enumerate(counts) if n)
    return total / max(5, WINDOW_SECONDS - first)


# -- the reading a process keeps -------------------------------------------------------------


class BacklogReader:
    """This process's last :class:`Backlog` reading, taken again when due (see the module's
    docstring). :meth:`read` is what a request calls: None when both bounds are off, or when no
    reading is recent enough to use."""

    def __init__(self, engine: sa.Engine, cache: Callable[[], redis.Redis], prefix: str, bounds: Bounds) -> None:
        self.engine, self.cache, self.prefix, self.bounds = engine, cache, prefix, bounds
        self._lock = threading.Lock()
        self._state: Backlog | None = None
        self._taken = 0.0  # monotonic time of the last reading
        self._due = 0.0  # monotonic time the next one is due

    def read(self) -> Backlog | None:
        if not self.bounds.on:
            return None
        now = time.monotonic()
        if now >= self._due:
            # the process's first reading, and one after it served nothing for a while: waited for
            if self._state is None or now - self._due > OVERDUE_SECONDS:
                with self._lock:
                    if time.monotonic() >= self._due:
                        self._refresh()
            elif self._lock.acquire(blocking=False):  # later ones: in a thread, this request goes on
                threading.Thread(target=self._refresh_and_release, name="etl-backlog-read", daemon=True).start()
        if self._state is None or time.monotonic() - self._taken > STALE_SECONDS:
            return None
        return self._state

    def _refresh_and_release(self) -> None:
        try:
            self._refresh()
        finally:
            self._lock.release()

    def _refresh(self) -> None:
        started = time.monotonic()
        try:
            rate: float | None = drain_rate(self.cache(), self.prefix)
        except redis.RedisError as exc:
            log.warning("backlog: the drain rate was not read: %s", exc)
            rate = None
        try:
            with self.engine.connect() as conn:
                state = read_backlog(conn, self.bounds, rate)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("backlog: not read: %s", exc)
            self._due = time.monotonic() + REFRESH_SECONDS
            return
        finished = time.monotonic()
        self._state, self._taken = state, finished
        self._due = finished + max(REFRESH_SECONDS, COST_FACTOR * (finished - started))
