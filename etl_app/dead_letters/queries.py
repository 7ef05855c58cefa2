"""Reading dead letters: newest first with keyset pagination (``next`` is the cursor of the
following page, ``None`` on the last one), or one with its payload and traceback. Each says what
its record is now (``record_status``) and, when superseded, which record kept its key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from etl_app.dead_letters.filters import Filters
from etl_app.models import SUPERSEDED, DeadLetter, DeadLetterEdit, RawRecord

DEAD_LETTERS = DeadLetter.__table__
RAW_RECORDS = RawRecord.__table__
EDITS = DeadLetterEdit.__table__

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
TRACEBACK_LINES = 20
MAX_ID = 2**63 - 1

_SUMMARY = (
    DEAD_LETTERS.c.id,
    DEAD_LETTERS.c.raw_record_id,
    DEAD_LETTERS.c.ingestion_id,
    DEAD_LETTERS.c.record_type,
    DEAD_LETTERS.c.natural_key,
    DEAD_LETTERS.c.error_type,
    DEAD_LETTERS.c.error,
    DEAD_LETTERS.c.task_name,
    DEAD_LETTERS.c.attempts,
    DEAD_LETTERS.c.status,
    DEAD_LETTERS.c.replay_count,
    DEAD_LETTERS.c.first_failed_at,
    DEAD_LETTERS.c.last_failed_at,
    DEAD_LETTERS.c.last_replayed_at,
    DEAD_LETTERS.c.last_outcome,
    DEAD_LETTERS.c.superseded_by,
    DEAD_LETTERS.c.superseded_by_ingestion_id,
    RAW_RECORDS.c.status.label("record_status"),
)
_JOINED = DEAD_LETTERS.outerjoin(RAW_RECORDS, RAW_RECORDS.c.id == DEAD_LETTERS.c.raw_record_id)


def _shaped(row: sa.RowMapping) -> dict[str, Any]:
    """A row as it is shown: ``superseded_by`` is ``{raw_record_id, ingestion_id}`` of the stored
    record that kept the key of a superseded dead letter, else None."""
    out = dict(row)
    raw_record_id, ingestion_id = out.pop("superseded_by"), out.pop("superseded_by_ingestion_id")
    out["superseded_by"] = (
        {"raw_record_id": raw_record_id, "ingestion_id": ingestion_id} if out["status"] == SUPERSEDED else None
    )
    return out


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
        query = query.where(DEAD_LETTERS.c.id < cursor)
    rows = conn.execute(query.order_by(DEAD_LETTERS.c.id.desc()).limit(limit + 1)).mappings().all()
    items = [_shaped(row) for row in rows[:limit]]
    return Page(items, str(items[-1]["id"]) if len(rows) > limit else None, limit)


def get_dead_letter(
    conn: sa.Connection, dead_letter_id: int, traceback_lines: int | None = TRACEBACK_LINES
) -> dict[str, Any] | None:
    """One dead letter with its payload and the last ``traceback_lines`` lines of its traceback
    (all of them for None); ``record_status`` is the raw record's current status; ``edits`` its
    corrected replays, oldest first (:func:`list_edits`)."""
    if not 0 < dead_letter_id <= MAX_ID:
        return None
    query = (
        sa.select(*_SUMMARY, DEAD_LETTERS.c.payload, DEAD_LETTERS.c.traceback)
        .select_from(_JOINED)
        .where(DEAD_LETTERS.c.id == dead_letter_id)
    )
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    out = _shaped(row)
    lines = (out["traceback"] or "").splitlines()
    out["traceback_truncated"] = traceback_lines is not None and len(lines) > traceback_lines
    if out["traceback_truncated"]:
        out["traceback"] = "\n".join(lines[-traceback_lines:])
    out["edits"] = list_edits(conn, dead_letter_id)
    return out


def list_edits(conn: sa.Connection, dead_letter_id: int) -> list[dict[str, Any]]:
    """The corrected replays of a dead letter (etl_app.dead_letters.edits), oldest first: ``{at,
    key_id, original, edited}``."""
    if not 0 < dead_letter_id <= MAX_ID:
        return []
    rows = conn.execute(
        sa.select(EDITS.c.at, EDITS.c.key_id, EDITS.c.original, EDITS.c.edited)
        .where(EDITS.c.dead_letter_id == dead_letter_id)
        .order_by(EDITS.c.id)
    )
    return [dict(row) for row in rows.mappings()]
