"""The lineage of one stored record (docs/lineage.md): where its stored version
came from, and every raw record and rejection that carried its key.

``lineage(conn, record_type, row)`` takes the stored row and answers::

    {ingestion_id, raw_record_id, source, ingestion_source, source_label,
     file: {filename, row} | null, received_at, enriched_at, persisted_at, attempts,
     schema_version, history: [...], history_truncated}

Rules:

- ``source`` is the ingestion's source (api, batch, ndjson, upload), except ``replay`` when the
  stored version landed through a replay of its dead letter: a replay keeps the raw record and its
  ingestion, so that is when the stored raw record has a dead letter (only a replay sends a dead
  record back into the pipeline). ``ingestion_source`` is always the ingestion's own source;
  ``source_label`` the free-text ``source`` the client gave in the record, if any.
- ``file`` is the upload's file name (``uploads``, same id as the ingestion) and the record's row
  in it (``raw_records.source_row``), for a record that came from an upload; null otherwise.
- ``attempts`` is the stored raw record's ``attempts``; null (like ``raw_record_id``) for a row
  stored before tables carried ``raw_record_id``.
- ``history``: the raw records of this record type and natural key, and the rejections of that key,
  oldest first by ``(received_at, raw record id / rejection id)``; a rejection's time is its
  ingestion's (``rejections.created_at``). Only the latest :data:`HISTORY_LIMIT` are listed;
  ``history_truncated`` says when older ones were left out. Each entry: ``kind`` (``raw_record``
  or ``rejection``), ``raw_record_id``, ``rejection_id``, ``ingestion_id``, ``source`` (the
  ingestion's), ``status`` (received, persisted, dead, rejected), ``received_at``, ``settled_at``
  (``raw_records.updated_at`` once persisted, dead or rejected; null while in flight),
  ``attempts``, ``stored`` (the version the table holds now), ``file``, ``position`` and
  ``errors`` (a rejection's place: the index in an API batch or the row of a file, and its field
  errors; null for raw records), ``dead_letter`` and ``replays``. An upload row kept both as a
  ``rejected`` raw record and as a rejection is one entry (the raw record, with the rejection's
  id, position and errors).
- ``dead_letter``: ``{id, error_type, error, status, attempts, first_failed_at, last_failed_at,
  replay_count, last_replayed_at, last_outcome, superseded_by: {raw_record_id, ingestion_id} |
  null, edited_fields, replays_not_listed}`` or null. ``edited_fields``: the top-level fields whose
  value in the raw record's current payload differs from the payload that last failed (what a
  corrected replay changed, until it fails again; null once retention dropped the payload).
- ``replays``: the audit rows of ``replay`` and ``edit`` actions on that dead letter (one dead
  letter by id, from the API or the command line), oldest first: ``{at, key_id, action, outcome,
  message, request_id}``, refused and failed attempts included. Bulk replays name filters, not
  dead letters, and a ``missing_parent`` dead letter is replayed without an audit row when its
  parent lands: those count in ``replay_count`` only, and ``replays_not_listed`` says how many
  (``replay_count`` minus the listed replays that went ``ok``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from etl_app.models import PERSISTED, RECEIVED, REJECTED, SUPERSEDED
from etl_app.record_types import RecordType

HISTORY_LIMIT = 100
REPLAY = "replay"
RAW_RECORD, REJECTION = "raw_record", "rejection"

_STORED = sa.text(
    """
    SELECT r.attempts, r.source_row, d.id AS dead_letter_id
    FROM raw_records r LEFT JOIN dead_letters d ON d.raw_record_id = r.id
    WHERE r.id = :id
    """
)

_INGESTION = sa.text(
    "SELECT i.source, u.filename FROM ingestions i LEFT JOIN uploads u ON u.id = i.id WHERE i.id = :id"
)

# Along ix_raw_records_natural_key (a hash index: every raw record of the key, sorted here), newest
# first; one more than shown, to tell truncation.
_RAW_HISTORY = sa.text(
    """
    SELECT r.id, r.ingestion_id, i.source, r.status, r.received_at, r.updated_at, r.attempts,
           r.source_row, u.filename,
           d.id AS dl_id, d.error_type, d.error, d.status AS dl_status, d.attempts AS dl_attempts,
           d.first_failed_at, d.last_failed_at, d.replay_count, d.last_replayed_at, d.last_outcome,
           d.superseded_by, d.superseded_by_ingestion_id,
           CASE WHEN d.id IS NOT NULL AND jsonb_typeof(r.payload) = 'object'
                     AND jsonb_typeof(d.payload) = 'object' THEN
               ARRAY(SELECT coalesce(a.key, b.key) FROM jsonb_each(r.payload) a
                     FULL JOIN jsonb_each(d.payload) b ON a.key = b.key
                     WHERE a.value IS DISTINCT FROM b.value ORDER BY 1)
           END AS edited_fields
    FROM raw_records r
    LEFT JOIN ingestions i ON i.id = r.ingestion_id
    LEFT JOIN uploads u ON u.id = r.ingestion_id
    LEFT JOIN dead_letters d ON d.raw_record_id = r.id
    WHERE r.record_type = :t AND r.natural_key = :k
    ORDER BY r.received_at DESC, r.id DESC
    LIMIT :n
    """
)

# Along ix_rejections_record_type_natural_key, newest first.
_REJECTION_HISTORY = sa.text(
    """
    SELECT j.id, j.ingestion_id, i.source, j.created_at, j.position, j.errors, u.filename
    FROM rejections j
    LEFT JOIN ingestions i ON i.id = j.ingestion_id
    LEFT JOIN uploads u ON u.id = j.ingestion_id
    WHERE j.record_type = :t AND j.natural_key = :k
    ORDER BY j.created_at DESC, j.id DESC
    LIMIT :n
    """
)

# Along the partial expression index ix_audit_dead_letter_replays (same predicate, same expression).
_REPLAYS = sa.text(
    """
    SELECT target ->> 'dead_letter_id' AS dl, at, key_id, action, outcome, message, request_id
    FROM audit
    WHERE action IN ('replay', 'edit') AND (target ->> 'dead_letter_id') = ANY(:ids)
    ORDER BY id
    """
)


def _file(filename: str | None, row: int | None) -> dict[str, Any] | None:
    return None if filename is None else {"filename": filename, "row": row}


def lineage(conn: sa.Connection, record_type: RecordType, row: sa.RowMapping, *, limit: int | None = None) -> dict:
    """The lineage of the stored ``row`` of ``record_type`` (see the module's doc)."""
    raw_id = row["raw_record_id"]
    stored = conn.execute(_STORED, {"id": raw_id}).first() if raw_id is not None else None
    ingestion = conn.execute(_INGESTION, {"id": row["ingestion_id"]}).first()
    ingestion_source = ingestion.source if ingestion is not None else None
    replayed = stored is not None and stored.dead_letter_id is not None
    limit = HISTORY_LIMIT if limit is None else limit
    history, truncated = _history(conn, record_type.name, str(row[record_type.key]), raw_id, limit)
    return {
        "ingestion_id": row["ingestion_id"],
        "raw_record_id": raw_id,
        "source": REPLAY if replayed else ingestion_source,
        "ingestion_source": ingestion_source,
        "source_label": row["source"],
        "file": _file(ingestion.filename if ingestion is not None else None, stored.source_row if stored else None),
        "received_at": row["received_at"],
        "enriched_at": row["enriched_at"],
        "persisted_at": row["persisted_at"],
        "attempts": stored.attempts if stored is not None else None,
        "schema_version": row["schema_version"],
        "history": history,
        "history_truncated": truncated,
    }


def key_history(conn: sa.Connection, type_name: str, key: str, *, limit: int | None = None) -> dict:
    """The history of a key that no row of its table holds (dead-lettered, rejected or still in
    the pipeline): ``{history, history_truncated}``, as :func:`lineage` has them."""
    history, truncated = _history(conn, type_name, key, None, HISTORY_LIMIT if limit is None else limit)
    return {"history": history, "history_truncated": truncated}


def _history(
    conn: sa.Connection, type_name: str, key: str, stored_raw_id: int | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    params = {"t": type_name, "k": key, "n": limit + 1}
    raws = conn.execute(_RAW_HISTORY, params).all()
    entries = [((r.received_at, 0, r.id), _raw_entry(r, stored_raw_id)) for r in raws]
    # A row an upload refused may be kept both as a `rejected` raw record and as a rejection (same
    # ingestion, row = position): one entry, the raw record's, with the rejection's place and errors.
    refused_raw = {
        (e["ingestion_id"], e["file"]["row"]): e for _, e in entries if e["status"] == REJECTED and e["file"]
    }
    for j in conn.execute(_REJECTION_HISTORY, params).all():
        same = refused_raw.get((j.ingestion_id, j.position))
        if same is not None:
            same.update(rejection_id=j.id, position=j.position, errors=j.errors)
        else:
            entries.append(((j.created_at, 1, j.id), _rejection_entry(j)))
    entries.sort(key=lambda pair: pair[0], reverse=True)
    truncated = len(entries) > limit
    shown = [entry for _, entry in entries[:limit]][::-1]
    _attach_replays(conn, shown)
    return shown, truncated


def _raw_entry(r: sa.Row, stored_raw_id: int | None) -> dict[str, Any]:
    dead_letter = None
    if r.dl_id is not None:
        dead_letter = {
            "id": r.dl_id,
            "error_type": r.error_type,
            "error": r.error,
            "status": r.dl_status,
            "attempts": r.dl_attempts,
            "first_failed_at": r.first_failed_at,
            "last_failed_at": r.last_failed_at,
            "replay_count": r.replay_count,
            "last_replayed_at": r.last_replayed_at,
            "last_outcome": r.last_outcome,
            "superseded_by": (
                {"raw_record_id": r.superseded_by, "ingestion_id": r.superseded_by_ingestion_id}
                if r.dl_status == SUPERSEDED
                else None
            ),
            "edited_fields": r.edited_fields,
            "replays_not_listed": r.replay_count,
        }
    return {
        "kind": RAW_RECORD,
        "raw_record_id": r.id,
        "rejection_id": None,
        "ingestion_id": r.ingestion_id,
        "source": r.source,
        "status": r.status,
        "received_at": r.received_at,
        "settled_at": None if r.status == RECEIVED else r.updated_at,
        "attempts": r.attempts,
        "stored": r.id == stored_raw_id and r.status == PERSISTED,
        "file": _file(r.filename, r.source_row),
        "position": None,
        "errors": None,
        "dead_letter": dead_letter,
        "replays": [],
    }


def _rejection_entry(j: sa.Row) -> dict[str, Any]:
    return {
        "kind": REJECTION,
        "raw_record_id": None,
        "rejection_id": j.id,
        "ingestion_id": j.ingestion_id,
        "source": j.source,
        "status": REJECTED,
        "received_at": j.created_at,
        "settled_at": j.created_at,
        "attempts": None,
        "stored": False,
        "file": _file(j.filename, j.position),
        "position": j.position,
        "errors": j.errors,
        "dead_letter": None,
        "replays": [],
    }


def _attach_replays(conn: sa.Connection, entries: list[dict[str, Any]]) -> None:
    by_dead_letter = {str(e["dead_letter"]["id"]): e for e in entries if e["dead_letter"] is not None}
    if not by_dead_letter:
        return
    for a in conn.execute(_REPLAYS, {"ids": sorted(by_dead_letter)}):
        entry = by_dead_letter[a.dl]
        entry["replays"].append(
            {
                "at": a.at,
                "key_id": a.key_id,
                "action": a.action,
                "outcome": a.outcome,
                "message": a.message,
                "request_id": a.request_id,
            }
        )
        if a.outcome == "ok":
            dead_letter = entry["dead_letter"]
            dead_letter["replays_not_listed"] = max(0, dead_letter["replays_not_listed"] - 1)
