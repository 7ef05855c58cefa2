"""Claiming unsettled records to send them (again): one statement for the relay and the sweeper.

A claim stamps ``enqueued_at`` and commits; the caller then sends the claimed records with
:func:`etl_app.ingest.send.send_after_commit`, which flags them unpublished again if the broker
does not take them. ``FOR UPDATE SKIP LOCKED``: relays of several web processes and sweepers on
several hosts never claim the same records at once.
"""

from __future__ import annotations

import sqlalchemy as sa

from etl_app.models import sql

# Records never published (the broker was down at accept time, or they wait for the relay) are
# swept only after this grace, so that the sweeper does not race the relay.
UNPUBLISHED_GRACE_SECONDS = 5

_CLAIM = sql(
    """
    WITH due AS (
        SELECT id FROM raw_records
        WHERE status = :RECEIVED
          AND ((enqueued_at IS NULL AND received_at <= now() - make_interval(secs => :grace))
               OR enqueued_at < now() - make_interval(secs => :lease))
        ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
    )
    UPDATE raw_records r SET enqueued_at = now() FROM due WHERE r.id = due.id
    RETURNING r.id, r.record_type
    """
)


def claim(conn: sa.Connection, *, limit: int, grace: float = 0, lease: float | None = None) -> dict[str, list[int]]:
    """Claim at most ``limit`` unsettled records, in the caller's transaction: those never
    published and received at least ``grace`` seconds ago, and (unless ``lease`` is None) those
    last enqueued more than ``lease`` seconds ago. Returns their ids by record type, in id order."""
    claimed: dict[str, list[int]] = {}
    for raw_id, type_name in conn.execute(_CLAIM, {"grace": grace, "lease": lease, "limit": limit}):
        claimed.setdefault(type_name, []).append(raw_id)
    for ids in claimed.values():
        ids.sort()
    return claimed


def count(claimed: dict[str, list[int]]) -> int:
    return sum(len(ids) for ids in claimed.values())
