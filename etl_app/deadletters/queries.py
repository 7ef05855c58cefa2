"""Reading dead letters: newest first with keyset pagination (``next`` is the cursor of the
following page, ``None`` on the last one), or one with its payload and traceback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from etl_app.deadletters.filters import Filters
from etl_app.models import DeadLetter, RawRecord

D = DeadLetter.__table__
R = RawRecord.__table__

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
TRACEBACK_LINES = 20
MAX_ID = 2**63 - 1

_SUMMARY = (
    D.c.id,
    D.c.raw_record_id,
    D.c.ingestion_id,
    D.c.record_type,
    D.c.natural_key,
    D.c.error_type,
    D.c.error,
    D.c.task_name,
    D.c.attempts,
    D.c.status,
    D.c.replay_count,
    D.c.first_failed_at,
    D.c.last_failed_at,
    D.c.last_replayed_at,
    D.c.last_outcome,
    R.c.status.label("record_status"),
)
_JOINED = D.outerjoin(R, R.c.id == D.c.raw_record_id)


@dataclass
class Page:
    items: list[dict[str, Any]]
    next: str | None
    limit: int


def list_dead_letters(
    conn: sa.Connection, filters: Filters, *, limit: int = DEFAULT_LIMIT, cursor: int | None = None
) -> Page:
    """One page of dead letters matching ``filters``, newest first (by id)."""
    query = sa.select(*_SUMMARY).select_from(_JOINED).where(*filters.where())
    if cursor is not None:
        query = query.where(D.c.id < cursor)
    rows = conn.execute(query.order_by(D.c.id.desc()).limit(limit + 1)).mappings().all()
    items = [dict(row) for row in rows[:limit]]
    return Page(items, str(items[-1]["id"]) if len(rows) > limit else None, limit)


def get_dead_letter(
    conn: sa.Connection, dead_letter_id: int, traceback_lines: int | None = TRACEBACK_LINES
) -> dict[str, Any] | None:
    """One dead letter with its payload and the last ``traceback_lines`` lines of its traceback
    (all of them for None); ``record_status`` is the raw record's current status."""
    if not 0 < dead_letter_id <= MAX_ID:
        return None
    query = sa.select(*_SUMMARY, D.c.payload, D.c.traceback).select_from(_JOINED).where(D.c.id == dead_letter_id)
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    out = dict(row)
    lines = (out["traceback"] or "").splitlines()
    out["traceback_truncated"] = traceback_lines is not None and len(lines) > traceback_lines
    if out["traceback_truncated"]:
        out["traceback"] = "\n".join(lines[-traceback_lines:])
    return out
