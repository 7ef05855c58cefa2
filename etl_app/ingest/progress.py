"""Ingestion progress, counted from the outbox."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from etl_app.models import DEAD, PERSISTED, RECEIVED, REJECTED

# An ingestion's status: finished once none of its records is in flight.
IN_PROGRESS = "running"  # quality.md: `running` until it settles
FINISHED = "finished"


def ingestion_status(conn: sa.Connection, ingestion_id: uuid.UUID) -> dict[str, Any] | None:
    """``{id, record_type, status, counts, created_at, finished_at}`` or None.

    counts: ``received`` (accepted in all), ``in_flight`` (not settled yet), ``persisted``,
    ``dead`` and ``rejected`` (refused at the API, plus upload rows refused at parsing).
    The ingestion is ``finished`` when nothing is in flight; ``finished_at`` is then the
    moment its last record settled.
    """
    ing = (
        conn.execute(
            sa.text(
                "SELECT id, record_type, source, accepted, rejected, created_at, finished_at "
                "FROM ingestions WHERE id = :id"
            ),
            {"id": ingestion_id},
        )
        .mappings()
        .first()
    )
    if ing is None:
        return None
    counts = {RECEIVED: 0, PERSISTED: 0, DEAD: 0, REJECTED: 0}
    last_update = None
    for state, n, last in conn.execute(
        sa.text("SELECT status, count(*), max(updated_at) FROM raw_records WHERE ingestion_id = :id GROUP BY status"),
        {"id": ingestion_id},
    ):
        counts[state] = n
        if last is not None and (last_update is None or last > last_update):
            last_update = last
    in_flight = counts[RECEIVED]
    finished = in_flight == 0
    finished_at = ing["finished_at"]
    if finished and finished_at is None:
        finished_at = last_update or ing["created_at"]
        conn.execute(
            sa.text("UPDATE ingestions SET finished_at = :t WHERE id = :id AND finished_at IS NULL"),
            {"t": finished_at, "id": ingestion_id},
        )
        conn.commit()
    return {
        "id": ing["id"],
        "record_type": ing["record_type"],
        "source": ing["source"],
        "status": FINISHED if finished else IN_PROGRESS,
        "counts": {
            "received": counts[RECEIVED] + counts[PERSISTED] + counts[DEAD],
            "in_flight": in_flight,
            "persisted": counts[PERSISTED],
            "dead": counts[DEAD],
            "rejected": ing["rejected"] + counts[REJECTED],
        },
        "created_at": ing["created_at"],
        "finished_at": finished_at if finished else None,
    }
