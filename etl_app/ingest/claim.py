"""Claiming unsettled records to send them (again): one statement for the relay and the sweeper.

A claim stamps ``enqueued_at`` and commits; the caller then sends the claimed records with
:func:`etl_app.ingest.send.send_after_commit`, which flags them unpublished again if the broker
does not take them. ``FOR UPDATE SKIP LOCKED``: relays of several web processes and sweepers on
several hosts never claim the same records at once.

**The lease.** ``raw_records.enqueued_at`` is when the record's lease began: when a chain
carrying it was sent, or when a stage of that chain last refreshed it (or a time to come, while
the chain waits for a countdown). Each chunk message carries the same time as ``leased``, and a
stage whose message is older than half the lease (``ETL_OUTBOX_LEASE_SECONDS``) refreshes the
lease of its records before it passes them on. So a record whose message waits in the queue has
a lease that began at most half a lease before that message was sent.

The sweeper re-drives a record when no live chain can hold it any more: its lease began more
than one lease before now AND more than one lease before the oldest message still waiting in the
``etl`` queue was sent (``queued_since``; the queue is first in, first out). Every message sent
before that one has left the queue, so a record that old is in no queued message; a running
stage would have refreshed it. Under a long queue the sweeper therefore does not re-send records
that are merely waiting, and it never stops re-sending those that were lost: a lost record is
due at most one lease plus one queue wait after its last lease began.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from etl_app.models import sql, unsettled_by_id

# Records never published (the broker was down at accept time, or they wait for the relay) are
# swept only after this grace, so that the sweeper does not race the relay.
UNPUBLISHED_GRACE_SECONDS = 5

_CLAIM = sql(
    """
    WITH due AS (
        SELECT id FROM raw_records
        WHERE status = :RECEIVED
          AND ((enqueued_at IS NULL AND received_at <= now() - make_interval(secs => :grace))
               OR enqueued_at < LEAST(now(), :queued_since) - make_interval(secs => :lease))
        ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
    )
    UPDATE raw_records r SET enqueued_at = now() FROM due WHERE r.id = due.id
    RETURNING r.id, r.record_type
    """
)


def claim(
    conn: sa.Connection,
    *,
    limit: int,
    grace: float = 0,
    lease: float | None = None,
    queued_since: datetime | None = None,
) -> dict[str, list[int]]:
    """Claim at most ``limit`` unsettled records, in the caller's transaction: those never
    published and received at least ``grace`` seconds ago, and (unless ``lease`` is None) those
    whose lease began more than ``lease`` seconds before both now and ``queued_since`` (when the
    oldest message still queued was sent; None when the queue is empty). Returns their ids by
    record type, in id order."""
    claimed: dict[str, list[int]] = {}
    params = {"grace": grace, "lease": lease, "limit": limit, "queued_since": queued_since}
    for raw_id, type_name in conn.execute(_CLAIM, params):
        claimed.setdefault(type_name, []).append(raw_id)
    for ids in claimed.values():
        ids.sort()
    return claimed


_REFRESH = sql(
    f"""
    UPDATE raw_records SET enqueued_at = now() + make_interval(secs => :ahead)
    WHERE id = ANY(:ids) AND {unsettled_by_id()}
      AND (enqueued_at IS NULL OR enqueued_at < now() + make_interval(secs => :ahead))
    """
)


def refresh_lease(conn: sa.Connection, ids: list[int], *, ahead: float = 0) -> None:
    """A live chain holds these records: their lease begins again now (or ``ahead`` seconds from
    now, for a chain that resumes after a countdown). A later lease is never shortened."""
    conn.execute(_REFRESH, {"ids": ids, "ahead": ahead})


def count(claimed: dict[str, list[int]]) -> int:
    return sum(len(ids) for ids in claimed.values())
