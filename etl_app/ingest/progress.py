"""Ingestion progress, counted from the outbox, with the quality stored when it settled."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from etl_app.models import DEAD, FAILED, PARSED, PERSISTED, RECEIVED, REJECTED

# An ingestion's status: `running` until it settles (docs/quality.md), then `finished`, or `failed`
# for an upload whose file turned out unreadable part-way (its rows before that are measured).
IN_PROGRESS = "running"
FINISHED = "finished"
UPLOAD_FAILED = FAILED

UPLOAD_FIELDS = ("filename", "format", "note", "size", "status", "rows_read", "progress", "error")

_INGESTION = sa.text(
    "SELECT i.id, i.record_type, i.source, i.rejected, i.rejections_not_stored, i.created_at, i.finished_at, "
    "i.quality, "
    "u.id AS upload_id, " + ", ".join(f"u.{name} AS upload_{name}" for name in UPLOAD_FIELDS) + " "
    "FROM ingestions i LEFT JOIN uploads u ON u.id = i.id WHERE i.id = ANY(:ids)"
)
_COUNTS = sa.text(
    "SELECT ingestion_id, status, count(*) FROM raw_records WHERE ingestion_id = ANY(:ids) "
    "GROUP BY ingestion_id, status"
)


def _read(conn: sa.Connection, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[sa.RowMapping, dict[str, int]]]:
    """The stored ingestions among ``ids``, each with its raw records counted by status: two
    statements however many ids."""
    found = {ing["id"]: (ing, {RECEIVED: 0, PERSISTED: 0, DEAD: 0, REJECTED: 0})
             for ing in conn.execute(_INGESTION, {"ids": ids}).mappings()}  # fmt: skip
    if found:
        for ingestion_id, state, n in conn.execute(_COUNTS, {"ids": list(found)}):
            found[ingestion_id][1][state] = n
    return found


def read_statuses(conn: sa.Connection, ingestion_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """:func:`read_status`'s report of each of these ingestions that exists, by id, in two
    statements (those who announce many settled ingestions at once read them together)."""
    return {ident: _report(ing, counts)[0] for ident, (ing, counts) in _read(conn, list(ingestion_ids)).items()}


def read_status(conn: sa.Connection, ingestion_id: uuid.UUID) -> tuple[dict[str, Any] | None, bool]:
    """``({id, record_type, source, status, counts, quality, created_at, finished_at, upload}`` or
    None, ``due``): the ingestion as stored, read only; ``due`` is True when it has settled but
    its quality is not stored yet (:func:`etl_app.quality.settle.ingestion_status` stores it first).

    counts: ``received`` (accepted in all), ``in_flight`` (not settled yet), ``persisted``,
    ``dead`` and ``rejected`` (refused at the API, plus upload rows refused at parsing), of which
    ``rejections_not_stored`` were only counted (past ETL_MAX_REJECTIONS_STORED).
    ``status`` is ``running`` until the ingestion settles (nothing in flight and, for an upload,
    its parse over); then its quality is stored (:mod:`etl_app.quality.settle`) and it is
    ``finished``, or ``failed`` for an upload whose parse failed.
    ``quality`` and ``finished_at`` are null while it runs. ``upload`` is null unless the
    ingestion is an upload: then ``{filename, format, note, size, status, rows_read, progress,
    error}``.
    """
    found = next(iter(_read(conn, [ingestion_id]).values()), None)
    return (None, False) if found is None else _report(*found)


def _report(ing: sa.RowMapping, counts: dict[str, int]) -> tuple[dict[str, Any], bool]:
    upload_open = ing["upload_id"] is not None and ing["upload_status"] not in (PARSED, FAILED)
    due = ing["quality"] is None and counts[RECEIVED] == 0 and not upload_open
    settled = ing["quality"] is not None
    if not settled:
        status = IN_PROGRESS
    elif ing["upload_status"] == FAILED:
        status = UPLOAD_FAILED
    else:
        status = FINISHED
    upload = None
    if ing["upload_id"] is not None:
        upload = {name: ing[f"upload_{name}"] for name in UPLOAD_FIELDS}
    return {
        "id": ing["id"],
        "record_type": ing["record_type"],
        "source": ing["source"],
        "status": status,
        "counts": {
            "received": counts[RECEIVED] + counts[PERSISTED] + counts[DEAD],
            "in_flight": counts[RECEIVED],
            "persisted": counts[PERSISTED],
            "dead": counts[DEAD],
            "rejected": ing["rejected"] + counts[REJECTED],
            "rejections_not_stored": ing["rejections_not_stored"],
        },
        "quality": ing["quality"] if settled else None,
        "created_at": ing["created_at"],
        "finished_at": ing["finished_at"] if settled else None,
        "upload": upload,
    }, due
