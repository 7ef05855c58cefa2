"""The pipeline stages: etl.validate → etl.enrich → etl.persist, one chain per chunk.

Each stage reads its :class:`~etl_app.pipeline.messages.ChunkMessage`, calls the domain step on
``self.db`` (the base task commits) and returns the next stage's message; every message it sends
besides (dead letters, waiting children, replays) goes out after the commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import TypeVar

from celery import shared_task

from etl_app.clock import utcnow
from etl_app.dead_letters import actions
from etl_app.dead_letters.store import Failure
from etl_app.ingest import claim
from etl_app.ingest.send import send_after_commit
from etl_app.names import ENRICH, PERSIST, VALIDATE
from etl_app.pipeline import enrich as enrich_step
from etl_app.pipeline import lookups as lookup_step
from etl_app.pipeline import persist as persist_step
from etl_app.pipeline import validate as validate_step
from etl_app.pipeline.messages import Chunk, ChunkMessage, chunk_message, read_chunk
from etl_app.pipeline.stash import Item
from etl_app.record_types import RecordType
from tasks.base import MIN_COUNTDOWN_SECONDS
from tasks.chunks import ChunkTask

log = logging.getLogger(__name__)
T = TypeVar("T")


class StageTask(ChunkTask):
    """A pipeline stage: what the three share (the stash, waiting for parents)."""

    abstract = True

    def hold_lease(self, chunk: Chunk) -> float:
        """This chain holds the chunk's records: refresh their lease in the outbox when it began
        more than half ``ETL_OUTBOX_LEASE_SECONDS`` ago (see :mod:`etl_app.ingest.claim`), so that
        the sweeper leaves them alone however long the queue. Returns when the lease began, for
        the next stage's message. A chain that keeps up writes nothing here."""
        now = time.time()
        if chunk.leased is not None and now - chunk.leased <= self.runtime.settings.outbox_lease_seconds / 2:
            return chunk.leased
        claim.refresh_lease(self.db, chunk.ids)
        return now

    def next_message(
        self, record_type: RecordType, items: list[Item], *, leased: float, parent_retries: int = 0
    ) -> ChunkMessage | None:
        """The message for the next stage: the ids, and the key of the values put in the stash."""
        if not items:
            return None
        return chunk_message(
            record_type.name,
            [one["id"] for one in items],
            stash=self.runtime.stash.put(items),
            parent_retries=parent_retries,
            leased=leased,
        )

    def persist_message(self, record_type: RecordType, items: list[Item], *, leased: float) -> ChunkMessage | None:
        """The message for persist: the ids, and the key of the chunk's rows as persist reads
        them (:func:`etl_app.pipeline.persist.rows_document`) put in the stash."""
        if not items:
            return None
        stash = self.runtime.stash.put_encoded(persist_step.rows_document(record_type, items))
        return chunk_message(record_type.name, [one["id"] for one in items], stash=stash, rows=True, leased=leased)

    def stashed_items(self, record_type: RecordType, chunk: Chunk) -> list[Item] | None:
        """The chunk's values from the stash; if they are gone, its records go through again."""
        stash = self.runtime.stash
        return self._from_stash(record_type, chunk, lambda key: stash.get(record_type, key))

    def stashed_document(self, record_type: RecordType, chunk: Chunk) -> bytes | None:
        """The chunk's values as the stash holds them (undecoded), or as :meth:`stashed_items`."""
        return self._from_stash(record_type, chunk, self.runtime.stash.get_encoded)

    def _from_stash(self, record_type: RecordType, chunk: Chunk, read: Callable[[str], T | None]) -> T | None:
        values = read(chunk.stash) if chunk.stash else None
        if values is None:
            log.warning(
                "%s: values of a chunk of %d are gone from the stash; sending it through again",
                self.name,
                len(chunk.ids),
            )
            self.after_commit(partial(self.republish, record_type.name, chunk.ids))
        return values

    def wait_or_give_up(self, type_name: str, waiting: list[enrich_step.Waiting], retries: int) -> list[Failure]:
        """Retry waiting children with backoff until ETL_PARENT_WAIT_SECONDS have passed since they
        first waited; then they are dead letters of type missing_parent. The last retry is due
        when the wait ends (``next_try_in``), so the dead letter comes then, not a backoff later."""
        settings = self.runtime.settings
        now = utcnow()
        retry, failures = enrich_step.give_up_on_waiting(waiting, now, settings.parent_wait_seconds)
        if retry:
            countdown = max(
                MIN_COUNTDOWN_SECONDS,
                enrich_step.next_try_in(retry, now, settings.parent_wait_seconds, self.backoff(retries)),
            )
            enrich_step.mark_waiting(self.db, retry, now + timedelta(seconds=countdown))
            ids = [w.item["id"] for w in retry]
            self.after_commit(partial(self.republish, type_name, ids, countdown=countdown, parent_retries=retries + 1))
        return failures


@shared_task(name=VALIDATE, base=StageTask, bind=True)
def validate(self: StageTask, message: ChunkMessage) -> ChunkMessage | None:
    """Check the chunk's records against their schema.

    A chunk of raw-record ids (from the relay, the sweeper, a replay or a split) is loaded from
    the outbox — records already settled are skipped — and validated here. A chunk the API
    publishes right after validating it (``validated``) has its loaded values in the stash
    already and is passed on, so the schema does not run twice per record."""
    chunk = read_chunk(message)
    record_type = self.runtime.registry[chunk.type_name]
    leased = self.hold_lease(chunk)
    if chunk.validated and chunk.stash:
        return chunk_message(record_type.name, chunk.ids, stash=chunk.stash, leased=leased)
    raws = validate_step.load_raw(self.db, chunk.ids)
    items, failures = validate_step.validate_chunk(record_type, raws)
    self.after_commit(partial(self.send_dead_letters, record_type.name, failures))
    return self.next_message(record_type, items, leased=leased, parent_retries=chunk.parent_retries)


@shared_task(name=ENRICH, base=StageTask, bind=True)
def enrich(self: StageTask, message: ChunkMessage | None, lookup_throttled: int = 0) -> ChunkMessage | None:
    """Look up parents and compute the derived fields; children of missing parents wait. A type
    with external lookups has them asked for the records that go on (see ``look_up_external``);
    ``lookup_throttled``: this chunk's retries so far that only waited for the rate limit."""
    if not message:
        return None
    chunk = read_chunk(message)
    runtime = self.runtime
    record_type = runtime.registry[chunk.type_name]
    items = self.stashed_items(record_type, chunk)
    if items is None:
        return None
    leased = self.hold_lease(chunk)
    parent_rows = {}
    if record_type.parents:
        parent_rows = enrich_step.fetch_parents(self.db, record_type, runtime.registry, items)
    done, waiting, failures = enrich_step.enrich_chunk(record_type, items, parent_rows)
    if record_type.lookups and done:
        done = look_up_external(self, message, record_type, done, lookup_throttled)
    if waiting:
        failures += self.wait_or_give_up(record_type.name, waiting, chunk.parent_retries)
    self.after_commit(partial(self.send_dead_letters, record_type.name, failures))
    self.after_commit(partial(runtime.stash.drop, chunk.stash))
    return self.persist_message(record_type, done, leased=leased)


def look_up_external(
    self: StageTask, message: ChunkMessage, record_type: RecordType, items: list[Item], throttled: int
) -> list[Item]:
    """Ask the type's lookups once for the chunk's values and fill the records' lookup fields.

    A failure worth retrying retries the whole task with Celery (``self.retry``, the countdown the
    lookup asks for; the stash keeps the chunk's values, the lease is extended) under the rule of
    :mod:`etl_app.pipeline.lookups`; otherwise the records go on with the fields null and
    ``lookup_status`` ``failed``. Counted retries are this task's ``request.retries`` less its
    throttled ones, so a transient database error's retry counts here too."""
    runtime = self.runtime
    providers = lookup_step.providers_for(record_type, runtime.settings)
    attempt = max(0, self.request.retries - throttled)
    results = lookup_step.look_up(
        providers,
        items,
        redis=runtime.cache,
        cache=runtime.lookup_cache,
        http=lookup_step.http_client(),
        key_prefix=runtime.settings.broker_key_prefix,
        attempt=attempt,
    )
    plan = lookup_step.retry_plan(results, attempt, throttled)
    if plan is not None:
        self.before_retry(message, plan.countdown)
        log.info(
            "%s: lookups of a chunk of %d to retry in %ds (retry %d, %d throttled)",
            self.name,
            len(items),
            plan.countdown,
            self.request.retries + 1,
            plan.throttled,
        )
        raise self.retry(
            args=(message,),
            kwargs={"lookup_throttled": plan.throttled},
            countdown=plan.countdown,
            max_retries=self.request.retries + 1,
        )
    return lookup_step.fill(providers, results, items, utcnow())


@shared_task(name=PERSIST, base=StageTask, bind=True)
def persist(self: StageTask, message: ChunkMessage | None) -> int:
    """Upsert the chunk and mark its raw records persisted in one transaction; then wake any
    children that were waiting for these records, replay those that were dead-lettered as
    missing_parent for them, and store the quality of the ingestions this chunk settled."""
    if not message:
        return 0
    chunk = read_chunk(message)
    runtime = self.runtime
    record_type = runtime.registry[chunk.type_name]
    values = self.stashed_document(record_type, chunk)
    if values is None:
        return 0
    if not chunk.rows:  # stashed by an enrich that stashed items
        values = persist_step.rows_from_items(record_type, values)
    persisted = persist_step.persist_stashed(self.db, record_type, values)
    keys = persisted.keys
    has_children = any(ref.record_type == record_type.name for other in runtime.registry for ref in other.parents)
    if has_children:
        waiting = persist_step.children_waiting_for(self.db, record_type, keys)  # first: see its docstring
        replayed = actions.replay_children(self.db, record_type.name, keys)
        if replayed.count:
            log.info("replaying %d missing_parent dead letters whose parent landed", replayed.count)
        self.after_commit(
            partial(send_after_commit, runtime.publisher, replayed.records, timeout=None, what="replayed dead letters")
        )
        for child_type, ids in waiting.items():
            self.after_commit(partial(self.republish, child_type, ids))
    self.after_commit(partial(runtime.stash.drop, chunk.stash))
    # the drain rate counts only the records this commit settled (a redelivery's are not counted again)
    self.settle_after_commit(settled=persisted.settled, ingestion_ids=persisted.ingestion_ids)
    return len(keys)
