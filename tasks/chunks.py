"""The base of the tasks that work on chunks of raw records: the pipeline stages
(``tasks/pipeline.py``) and the dead-letter consumer (``tasks/dead_letter.py``).

It adds to :class:`tasks.base.EtlTask` (the unit of work and the retry policy) what a chunk
needs: a chunk that fails for good is bisected into two new chains until the one bad record is
isolated and dead-lettered with its traceback; a retry extends the lease of the chunk's records in
the outbox; records are sent through a new chain (``republish``) or to the dead-letter queue
(``send_dead_letters``); the quality of the ingestions a call settled is stored after its commit,
and the records it settled are counted for the backlog's drain rate (:mod:`etl_app.ingest.backlog`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from typing import Any

from etl_app.dead_letters.store import Failure
from etl_app.ingest import backlog, claim
from etl_app.pipeline.messages import UnreadableMessage, publish_chunks, publish_dead_letters, read_chunk
from etl_app.quality import settle
from tasks.base import EtlTask, PermanentFailure

log = logging.getLogger(__name__)


class ChunkTask(EtlTask):
    """A task whose message is a chunk (:mod:`etl_app.pipeline.messages`).

    A chunk that fails for good (a permanent error, or ``ETL_MAX_DELIVERIES`` deliveries that
    never finished) is split: a chunk of several records becomes two new chains of half the
    records each, from validate; a chunk of one record is dead-lettered with its error type, its
    error and its traceback (the ``dead_letter`` queue, whose consumer writes ``dead_letters``).
    A call whose first argument is not a JSON object (the dead-letter consumer's) fails as
    :meth:`tasks.base.EtlTask.on_permanent_failure` makes it fail.
    """

    abstract = True

    def on_permanent_failure(self, message: Any, failure: PermanentFailure) -> None:
        if not isinstance(message, dict):
            super().on_permanent_failure(message, failure)
            return
        self.split_or_dead_letter(message, failure.error_type, failure.error, failure.traceback)

    def split_or_dead_letter(self, message: dict, error_type: str, error: str, tb: str | None) -> None:
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

    def before_retry(self, message: Any, countdown: float) -> None:
        """Best effort: the chunk's records wait for this retry, so their lease runs from when it
        is due. If the database cannot take it (it may be why the task failed), a sweeper may
        re-send them meanwhile: a duplicate chain, which changes nothing.

        This call's transaction ends first (committed; after an error it is rolled back already):
        a lease it renewed (``hold_lease`` in ``tasks/pipeline.py``) holds the rows updated here
        through another connection, which would otherwise wait for this very task for ever."""
        self.commit()
        try:
            ids = read_chunk(message).ids
            if ids:
                with self.runtime.engine.begin() as conn:
                    claim.refresh_lease(conn, ids, ahead=countdown)
        except Exception as exc:  # noqa: BLE001 - the retry goes ahead regardless
            log.debug("%s: lease not extended for the retry: %s", self.name, exc)

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
        """Send these failures to the dead-letter consumer (``tasks/dead_letter.py``)."""
        if failures:
            publish_dead_letters(self.app, type_name, [f.to_message() for f in failures], self.name)

    def settle_after_commit(
        self, *, settled: int, ingestion_ids: Iterable[Any] = (), raw_ids: Iterable[int] = ()
    ) -> None:
        """Once this call's transaction has committed, count the ``settled`` records it settled
        (the backlog's drain rate: one Redis round trip) and store the quality of those of these
        ingestions (or of these raw records' ingestions) that have settled
        (:mod:`etl_app.quality.settle`), on this call's connection. Checking is one indexed query;
        a failure is logged, never the task's."""
        if settled:
            runtime = self.runtime
            self.after_commit(
                partial(backlog.count_settled, runtime.cache, runtime.settings.broker_key_prefix, settled)
            )
        ingestion_ids, raw_ids = sorted(set(ingestion_ids)), sorted(set(raw_ids))
        if ingestion_ids or raw_ids:
            runtime, unit = self.runtime, self.unit
            self.after_commit(
                lambda: settle.settle_quietly(
                    unit.connection, runtime.registry, runtime.settings, ingestion_ids=ingestion_ids, raw_ids=raw_ids
                )
            )
