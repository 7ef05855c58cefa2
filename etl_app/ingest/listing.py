"""Ingestions newest first, for the operator's pages, ``GET /api/v1/ingestions`` and ``etl-app
ingestions list``: which ingestions a page shows (keyset on ``(created_at, id)``, never OFFSET),
filtered by record type, status and creation time, and the segments of each one's progress bar.
What each ingestion is (counts, status, quality) is
:func:`etl_app.quality.settle.ingestion_status`, as ``GET /api/v1/ingestions/{id}`` shows it.

The list reads ``ix_ingestions_created_at_id`` (or ``ix_ingestions_record_type_created_at_id``
with a type) backwards. An ingestion has settled once its quality is stored, or, before that,
once nothing of it is in flight and its upload (if any) is read: ``running`` are the others
(among ``quality IS NULL``, ``ix_ingestions_unmeasured``), ``failed`` a settled upload whose parse
failed, ``finished`` every other settled one: as each one's status reads.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl_app.ingest.progress import FINISHED, IN_PROGRESS, UPLOAD_FAILED
from etl_app.models import FAILED, PARSED, RECEIVED, Ingestion, RawRecord, Upload

INGESTIONS = Ingestion.__table__
UPLOADS = Upload.__table__
RAW_RECORDS = RawRecord.__table__

STATUSES = (IN_PROGRESS, FINISHED, UPLOAD_FAILED)
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
# The progress bar's segments, left to right, as ingestion_status counts them.
SEGMENTS = ("persisted", "in_flight", "dead", "rejected")


class BadCursor(ValueError):
    """A cursor that this module did not write."""


@dataclass(frozen=True)
class Listed:
    ids: list[uuid.UUID]
    next: str | None  # the cursor of the older page, None on the last one


def encode_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    """``<created_at in UTC>~<id>``: only characters a URL's query keeps as they are (an offset's
    ``+`` would be read back as a space when the cursor is pasted into a URL unencoded)."""
    return f"{created_at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}~{ident}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    moment, sep, ident = cursor.partition("~")
    try:
        if not sep:
            raise ValueError(cursor)
        created_at = datetime.fromisoformat(moment)
        if created_at.tzinfo is None:
            raise ValueError(cursor)
        return created_at, uuid.UUID(ident)
    except ValueError:
        raise BadCursor(cursor) from None


def _failed_upload() -> sa.Exists:
    return sa.exists().where(UPLOADS.c.id == INGESTIONS.c.id, UPLOADS.c.status == FAILED)


def _settled() -> sa.ColumnElement[bool]:
    """Measured, or nothing in flight and the upload (if any) read: what ingestion_status calls
    settled whether or not its quality is stored yet."""
    # status BETWEEN received AND received: by the (ingestion_id, status) index, never by walking the
    # partial index of unsettled records (etl_app.ingest.tables.unsettled_by_ingestion)
    in_flight = sa.exists().where(
        RAW_RECORDS.c.ingestion_id == INGESTIONS.c.id, RAW_RECORDS.c.status.between(RECEIVED, RECEIVED)
    )
    reading = sa.exists().where(UPLOADS.c.id == INGESTIONS.c.id, UPLOADS.c.status.not_in((PARSED, FAILED)))
    return sa.or_(INGESTIONS.c.quality.is_not(None), sa.and_(~in_flight, ~reading))


def list_ingestions(
    conn: sa.Connection,
    *,
    record_type: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Listed:
    """The ids of one page of ingestions (created at or after ``since``, when given), newest
    first, and the cursor of the next (older) page."""
    query = sa.select(INGESTIONS.c.id, INGESTIONS.c.created_at)
    if record_type is not None:
        query = query.where(INGESTIONS.c.record_type == record_type)
    if since is not None:
        query = query.where(INGESTIONS.c.created_at >= since)
    if status == IN_PROGRESS:
        query = query.where(INGESTIONS.c.quality.is_(None), ~_settled())
    elif status == FINISHED:
        query = query.where(_settled(), ~_failed_upload())
    elif status == UPLOAD_FAILED:
        query = query.where(_settled(), _failed_upload())
    elif status is not None:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    if cursor is not None:
        created_at, ident = decode_cursor(cursor)
        query = query.where(sa.tuple_(INGESTIONS.c.created_at, INGESTIONS.c.id) < sa.tuple_(created_at, ident))
    query = query.order_by(INGESTIONS.c.created_at.desc(), INGESTIONS.c.id.desc()).limit(limit + 1)
    rows = conn.execute(query).all()
    following = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return Listed([row.id for row in rows[:limit]], following)


def segments(counts: dict[str, int]) -> list[dict[str, Any]]:
    """The progress bar of an ingestion's counts: ``{name, count, percent}`` per segment, each a
    share of everything received (accepted + rejected), in percent with two decimals."""
    total = counts["received"] + counts["rejected"]
    return [
        {"name": name, "count": counts[name], "percent": round(counts[name] * 100 / total, 2) if total else 0.0}
        for name in SEGMENTS
    ]
