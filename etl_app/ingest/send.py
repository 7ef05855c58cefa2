"""The one way committed records are sent down the pipeline: :func:`send_after_commit`.

Every sender commits first and sends after: the API after an ingest or a replay, the CLI after a
replay, the tasks after replaying children whose parent landed, the relay and the sweeper after
a claim. If the broker cannot take the chains, the records are flagged unpublished
(``enqueued_at`` NULL): the relay of a web process (woken when one is given) or the outbox
sweeper sends them later. The records are durable either way, and a duplicate send is harmless:
every stage skips records that are settled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from celery import Celery

from etl_app.models import sql, unsettled_by_id
from etl_app.pipeline.messages import publish_chunks, publish_validated
from etl_app.pipeline.stash import Item, Stash

log = logging.getLogger(__name__)

_publisher = ThreadPoolExecutor(max_workers=4, thread_name_prefix="etl-publish")

_FLAG_UNPUBLISHED = sql(f"UPDATE raw_records SET enqueued_at = NULL WHERE id = ANY(:ids) AND {unsettled_by_id()}")


@dataclass(frozen=True)
class Publisher:
    """What sending committed records takes, and nothing more: the Celery app (tasks are sent by
    name), the stash where validated values wait, the database (to flag what the broker did not
    take), the records of one chain (ETL_CHUNK_SIZE) and the deadline of a send
    (ETL_PUBLISH_TIMEOUT_SECONDS). A process's Runtime makes one when asked (its ``publisher``);
    it holds no connection of its own."""

    celery: Celery
    stash: Stash
    engine: sa.Engine
    chunk_size: int
    timeout: float


class Wakeable(Protocol):
    """What retries unpublished records soon: a web process's outbox relay
    (:class:`etl_app.ingest.relay.Relay`)."""

    def notify(self) -> None: ...


def run_within(send: Callable[[], Any], timeout: float | None) -> None:
    """Run a broker send, within ``timeout`` seconds (None: no deadline beyond the broker's socket
    timeouts); raises what it raises, or TimeoutError past the deadline, when the send goes on
    in the background."""
    if timeout is None:
        send()
    else:
        _publisher.submit(send).result(timeout=timeout)


def send_after_commit(
    publisher: Publisher,
    records: Mapping[str, Sequence[int]],
    *,
    items: Sequence[Item] | None = None,
    timeout: float | None,
    what: str,
    relay: Wakeable | None = None,
) -> bool:
    """Send one chain per chunk for these committed raw records (ids by record type), within
    ``timeout`` seconds (None: no deadline beyond the broker's socket timeouts). True once the
    broker took them all.

    ``items``: the values the API has just validated, for a single record type, in the order of
    its ids; they wait in the stash, so the worker does not validate them again.

    If the broker cannot take them in time, the records are flagged unpublished, ``relay`` (if
    any) is woken to retry, and False is returned. A send that outlives the deadline finishes in
    the background."""
    ids = [i for part in records.values() for i in part]
    if not ids:
        return True
    chunk_size = publisher.chunk_size
    if items is not None and len(records) != 1:
        raise ValueError("validated items go with the ids of one record type")

    def send() -> None:
        for type_name, type_ids in records.items():
            if items is not None:
                publish_validated(publisher.celery, publisher.stash, type_name, items, chunk_size)
            else:
                publish_chunks(publisher.celery, type_name, type_ids, chunk_size)

    try:
        run_within(send, timeout)
        return True
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the records to the relay and sweeper
        log.warning("could not publish %s (%d records): %s; left to the relay and the sweeper", what, len(ids), exc)
    try:
        with publisher.engine.begin() as conn:
            conn.execute(_FLAG_UNPUBLISHED, {"ids": ids})
    except Exception as db_exc:  # noqa: BLE001 - then the lease applies instead of the grace
        log.warning("could not flag unpublished records: %s", db_exc)
    if relay is not None:
        relay.notify()
    return False
