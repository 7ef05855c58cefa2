"""Ingestion progress, counted from the outbox, with the quality stored when it settled."""

from __future__ import annotations

import threading
import time
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
    rows = {ing["id"]: ing for ing in conn.execute(_INGESTION, {"ids": ids}).mappings()}
    counts = _counted(conn, list(rows)) if rows else {}
    return {ident: (ing, counts[ident]) for ident, ing in rows.items()}


def _counted(conn: sa.Connection, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """The raw records of each of these ingestions by status (every status, 0 when it has none)."""
    counts = {ident: {RECEIVED: 0, PERSISTED: 0, DEAD: 0, REJECTED: 0} for ident in ids}
    for ingestion_id, state, n in conn.execute(_COUNTS, {"ids": ids}):
        counts[ingestion_id][state] = n
    return counts


def read_statuses(conn: sa.Connection, ingestion_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """:func:`read_status`'s report of each of these ingestions that exists, by id, in two
    statements (those who announce many settled ingestions at once read them together)."""
    return {ident: _report(ing, counts)[0] for ident, (ing, counts) in _read(conn, list(ingestion_ids)).items()}


# A running ingestion of many records is counted again only after a while: counting reads an index
# entry and a heap tuple per record (its records were just written), about 30 ms of PostgreSQL
# for 50,000 of them, and a client following a large upload asks several times a second. Its
# counts are kept for one second per RECORDS_PER_SECOND_KEPT records counted (at most
# MAX_KEPT_SECONDS), in this process, and only while records are in flight: the ingestion's own
# row (its quality, so whether it settled) is always read afresh, and a count that finds nothing
# in flight is never reused.
COUNTS_KEPT_FROM = 10_000
RECORDS_PER_SECOND_KEPT = 50_000
MAX_KEPT_SECONDS = 2.0
_MAX_KEPT = 256
_kept: dict[uuid.UUID, tuple[float, dict[str, int]]] = {}
_kept_lock = threading.Lock()


def _kept_counts(ingestion_id: uuid.UUID) -> dict[str, int] | None:
    with _kept_lock:
        kept = _kept.get(ingestion_id)
    if kept is None or kept[0] < time.monotonic():
        return None
    return dict(kept[1])


def _keep_counts(ingestion_id: uuid.UUID, counts: dict[str, int]) -> None:
    total = sum(counts.values())
    if total < COUNTS_KEPT_FROM or counts[RECEIVED] == 0:
        return
    until = time.monotonic() + min(MAX_KEPT_SECONDS, total / RECORDS_PER_SECOND_KEPT)
    with _kept_lock:
        if len(_kept) >= _MAX_KEPT:
            _kept.clear()
        _kept[ingestion_id] = (until, dict(counts))


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
    ``quality`` and ``finished_at`` are null while it runs; the counts of one running with
    ``COUNTS_KEPT_FROM`` records or more may be up to a second or two old (see above). ``upload`` is null unless the
    ingestion is an upload: then ``{filename, format, note, size, status, rows_read, progress,
    error}``.
    """
    ing = conn.execute(_INGESTION, {"ids": [ingestion_id]}).mappings().first()
    if ing is None:
        return None, False
    running = ing["quality"] is None
    counts = _kept_counts(ingestion_id) if running else None
    if counts is None:
        counts = _counted(conn, [ing["id"]])[ing["id"]]
        if running:
            _keep_counts(ingestion_id, counts)
    return _report(ing, counts)


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
