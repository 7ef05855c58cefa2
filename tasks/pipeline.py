"""The pipeline stages: etl.validate → etl.enrich → etl.persist, one chain per chunk."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task

from etl_app import errors
from etl_app.clock import utcnow
from etl_app.deadletters import actions
from etl_app.deadletters.store import Failure
from etl_app.pipeline import enrich as enrich_step
from etl_app.pipeline import persist as persist_step
from etl_app.pipeline import validate as validate_step
from tasks.base import EtlTask

log = logging.getLogger(__name__)


def _failures(failures: list[Failure]) -> list[dict]:
    return [
        {
            "id": f.raw_id,
            "error_type": f.error_type,
            "error": f.error,
            "traceback": f.traceback,
            "waiting_on": f.waiting_on,
        }
        for f in failures
    ]


@shared_task(name="etl.validate", base=EtlTask, bind=True)
def validate(self: EtlTask, chunk: dict) -> dict | None:
    """Check the chunk's records against their schema.

    A chunk of raw-record ids (from the relay, the sweeper, a replay or a split) is loaded from
    the outbox — records already settled are skipped — and validated here. A chunk the API
    publishes right after validating it (``validated``) has its loaded values in the stash
    already and is passed on, so the schema does not run twice per record."""
    rt = self.runtime.registry[chunk["type"]]
    if chunk.get("validated") and chunk.get("stash"):
        return {"type": rt.name, "ids": chunk["ids"], "stash": chunk["stash"], "parent_retries": 0}
    with self.runtime.engine.connect() as conn:
        raws = validate_step.load_raw(conn, chunk["ids"])
    items, failures = validate_step.validate_chunk(rt, raws)
    self.send_dead_letters(rt.name, _failures(failures))
    return _out(self, rt, items, parent_retries=chunk.get("parent_retries", 0))


def _out(task: EtlTask, rt, items: list[dict], **extra) -> dict | None:
    """The message for the next stage: the ids, and the key of the values in the stash."""
    if not items:
        return None
    return {"type": rt.name, "ids": [item["id"] for item in items], "stash": task.runtime.stash.put(items), **extra}


def _fetch(task: EtlTask, rt, chunk: dict) -> list[dict] | None:
    """The chunk's values from the stash; if they are gone, its records go through again."""
    items = task.runtime.stash.get(rt, chunk["stash"])
    if items is None:
        log.warning(
            "%s: values of a chunk of %d are gone from the stash; sending it through again",
            task.name,
            len(chunk["ids"]),
        )
        task.republish(rt.name, chunk["ids"])
    return items


@shared_task(name="etl.enrich", base=EtlTask, bind=True)
def enrich(self: EtlTask, chunk: dict | None) -> dict | None:
    """Look up parents and compute the derived fields; children of missing parents wait."""
    if not chunk:
        return None
    runtime = self.runtime
    rt = runtime.registry[chunk["type"]]
    items = _fetch(self, rt, chunk)
    if items is None:
        return None
    parent_rows = {}
    if rt.parents:
        with runtime.engine.connect() as conn:
            parent_rows = enrich_step.fetch_parents(conn, rt, runtime.registry, items)
    done, waiting, failures = enrich_step.enrich_chunk(rt, items, parent_rows)
    if waiting:
        failures += _wait_or_give_up(self, rt.name, waiting, chunk.get("parent_retries", 0))
    self.send_dead_letters(rt.name, _failures(failures))
    out = _out(self, rt, done)
    runtime.stash.drop(chunk["stash"])
    return out


def _wait_or_give_up(
    task: EtlTask, record_type: str, waiting: list[enrich_step.Waiting], retries: int
) -> list[Failure]:
    """Retry waiting children with backoff until ETL_PARENT_WAIT_SECONDS have passed since they
    first waited; then they are dead letters of type missing_parent."""
    settings = task.runtime.settings
    now = utcnow()
    budget = timedelta(seconds=settings.parent_wait_seconds)
    expired = [w for w in waiting if w.item.get("waiting_since") and now - w.item["waiting_since"] >= budget]
    retry = [w for w in waiting if w not in expired]
    if retry:
        countdown = task.backoff(retries)
        with task.runtime.engine.begin() as conn:
            enrich_step.mark_waiting(conn, retry, now + timedelta(seconds=countdown))
        task.republish(record_type, [w.item["id"] for w in retry], countdown=countdown, parent_retries=retries + 1)
    return [
        Failure(
            w.item["id"],
            errors.MISSING_PARENT,
            f"parent {w.parent_ref} not found after waiting {settings.parent_wait_seconds}s",
            waiting_on=w.parent_ref,
        )
        for w in expired
    ]


@shared_task(name="etl.persist", base=EtlTask, bind=True)
def persist(self: EtlTask, chunk: dict | None) -> int:
    """Upsert the chunk and mark its raw records persisted in one transaction; then wake any
    children that were waiting for these records, and replay those that were dead-lettered as
    missing_parent for them."""
    if not chunk:
        return 0
    runtime = self.runtime
    rt = runtime.registry[chunk["type"]]
    has_children = any(ref.record_type == rt.name for other in runtime.registry for ref in other.parents)
    replayed = actions.Replayed()
    waiting: dict[str, list[int]] = {}
    items = _fetch(self, rt, chunk)
    if items is None:
        return 0
    with runtime.engine.begin() as conn:
        keys = persist_step.persist_chunk(conn, rt, items)
        if has_children:
            waiting = persist_step.children_waiting_for(conn, rt, keys)  # first: see its docstring
            replayed = actions.replay_children(conn, rt.name, keys)
    runtime.stash.drop(chunk["stash"])
    if replayed.count:
        log.info("replaying %d missing_parent dead letters whose parent landed", replayed.count)
    actions.publish(runtime.engine, self.app, replayed, chunk_size=runtime.settings.chunk_size, timeout=None)
    for child_type, ids in waiting.items():
        self.republish(child_type, ids)
    return len(keys)
