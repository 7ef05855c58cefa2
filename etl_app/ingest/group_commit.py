"""Group commit: the single records that concurrent requests of one process store share one
statement, and so one round trip and one commit.

Under load a web process has several single-record submits in flight at once (gevent: one
greenlet each). Each used to take a pooled connection, send its own autocommitted statement and
wait for its own commit: a round trip, a WAL flush and the pool's checkout and checkin per
record, in the web process and in PostgreSQL alike, and, past the pool's size, a new connection
(a PostgreSQL backend started and ended) for the overflow.

**How.** Nothing waits on purpose. A request that finds no group being written becomes the
*leader*: it writes its own record at once, alone, exactly as before. Requests that arrive while
a group is being written queue; when the leader's statement returns, it hands the lead to the
first of them, which writes the whole queue as the next group, in one statement, on one
connection. Groups therefore grow only with the concurrency itself: one request alone pays what
it paid before, and a flood shares its commits. A process writes single records on one
connection at a time.

**What stays.** A request still answers 202 only once the statement holding its record has
returned, that is committed (autocommit: the statement is its own transaction, all its rows or
none). Each record keeps its own ingestion, ids and time received; nothing is added to another
request's. When a group's statement fails while its connection is still good (a row PostgreSQL
refused), nothing of the group was stored, and each record is written again alone: only the
request whose record fails gets the error. When the connection or the database failed, every
request of the group gets that error (a 503: nothing was stored; they are retried by their
clients). A request interrupted while it waits is taken out of the queue if its group was not
taken yet (nothing of it is stored), and passes the lead on if it had just been given it; once
its group is being written, its record may be committed whatever its request answers, as with a
request whose connection dies after its commit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import psycopg

T = TypeVar("T")
R = TypeVar("R")


class _Entry(Generic[T, R]):
    __slots__ = ("done", "error", "item", "lead", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = threading.Event()
        self.lead = False  # handed the lead: write the queue
        self.result: R | None = None
        self.error: BaseException | None = None


class LeaderInterrupted(psycopg.OperationalError):
    """The request writing a group was interrupted (not by an error of the write): the group's
    other requests get this (the API's 503), their records stored or not."""


# write(items) -> one outcome per item, in order: its result, or the exception it raises
Writer = Callable[[Sequence[T]], Sequence[Any]]


class GroupCommit(Generic[T, R]):
    """Items written by ``write`` in groups of whatever is queued (see the module's docstring).
    ``write`` returns one outcome per item, in order: the item's result, or an exception to raise
    in its request; an exception it raises itself is every item's."""

    def __init__(self, write: Writer) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._queue: list[_Entry[T, R]] = []
        self._leading = False

    def submit(self, item: T) -> R:
        """Write ``item`` (with whatever else is queued) and return its result, or raise its error."""
        entry: _Entry[T, R] = _Entry(item)
        with self._lock:
            self._queue.append(entry)
            lead = not self._leading
            self._leading = True
        if not lead:
            self._wait(entry)
        if not entry.done.is_set() or entry.lead:
            self._lead()
        if entry.error is not None:
            raise entry.error
        return entry.result  # type: ignore[return-value]

    def _wait(self, entry: _Entry[T, R]) -> None:
        try:
            entry.done.wait()
        except BaseException:
            with self._lock:  # interrupted: out of the queue if its group was not taken yet
                if entry in self._queue:
                    self._queue.remove(entry)
                    if entry.lead:
                        self._hand_over()
            raise

    def _lead(self) -> None:
        with self._lock:
            group, self._queue = self._queue, []
        try:
            outcomes = list(self._write([e.item for e in group]))
            if len(outcomes) != len(group):
                raise RuntimeError(f"a group of {len(group)} written with {len(outcomes)} outcomes")
        except BaseException as exc:
            if not isinstance(exc, Exception):
                exc = LeaderInterrupted(f"the group's write was interrupted: {exc!r}")
            outcomes = [exc] * len(group)
            raise
        finally:
            for e, outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    e.error = outcome
                else:
                    e.result = outcome
                e.lead = False
                e.done.set()
            with self._lock:
                self._hand_over()

    def _hand_over(self) -> None:
        """Under the lock: the first queued request leads next, or no one does."""
        if self._queue:
            first = self._queue[0]
            first.lead = True
            first.done.set()
        else:
            self._leading = False


class PerProcess(Generic[T, R]):
    """A :class:`GroupCommit` for each process (a forked child starts with an empty queue)."""

    def __init__(self, write: Writer) -> None:
        self._write = write
        self._pid: int | None = None
        self._group: GroupCommit[T, R] | None = None

    def submit(self, item: T) -> R:
        if self._pid != os.getpid() or self._group is None:
            self._group, self._pid = GroupCommit(self._write), os.getpid()
        return self._group.submit(item)
