"""The audit trail: who replayed, discarded or edited dead letters, ran jobs, reset lookup
providers' circuit breakers and gave up on records waiting for their parents, and how it went.

One row of the ``audit`` table per action: ``at``, ``key_id`` (the API key's id,
etl_app.roles.key_id; ``cli`` for the command line; ``beat`` for scheduled job runs), ``action``
(replay, bulk_replay, discard, bulk_discard, edit (a replay with a corrected payload), job_run,
breaker_reset, give_up), ``target`` (JSON: ``{dead_letter_id}``, ``{filters}``, ``{group, record_type,
error_type, cause}`` for a group's replay, with ``reason`` for its discard (bulk_discard),
``{job, window, run_id}``, ``{provider}``, ``{ingestion_id}``, ``{record_type}`` or ``{record: {type,
key}}`` for a give-up), ``count`` (dead letters acted on, rows a job
touched), ``outcome`` (ok, refused, failed) with a ``message``, and the HTTP ``request_id`` if
there is one.

A refused action is not one row per request: the refusals of one key and action within a minute
(``window_start``) are one row, whose ``occurrences`` counts them from ``first_at`` to ``at``
(target, message and request id are those of the first; the request id of the last replaces it),
written by one upsert, so a flood of refused requests cannot grow the table by more than a row
per key, action and minute. Other outcomes have ``occurrences`` 1.

Where the action writes to the database, its audit row is written in the same transaction
(:func:`audited`): an action that commits is audited, one that fails leaves its row ``failed``
(written on its own after the rollback). Job runs are audited by the runner
(etl_app.jobs.runner), next to the run's own record in ``job_runs``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from etl_app.audit.tables import AUDIT_ACTIONS, AuditEntry

log = logging.getLogger(__name__)

OK, REFUSED, FAILED = "ok", "refused", "failed"
ACTIONS = AUDIT_ACTIONS
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
MAX_MESSAGE_CHARS = 2000
AUDIT = AuditEntry.__table__


@dataclass
class Entry:
    key_id: str
    action: str
    target: dict[str, Any] = field(default_factory=dict)
    count: int | None = None
    outcome: str = OK
    message: str | None = None
    request_id: str | None = None


_INSERT = sa.text(
    "INSERT INTO audit (at, first_at, key_id, action, target, count, outcome, message, request_id, occurrences, "
    "window_start) "
    "SELECT t, t, :key_id, :action, CAST(:target AS jsonb), :count, :outcome, :message, :request_id, 1, "
    "CASE WHEN :outcome = 'refused' THEN date_trunc('minute', t) END FROM (SELECT clock_timestamp() AS t) now "
    "ON CONFLICT (key_id, action, window_start) WHERE outcome = 'refused' "
    "DO UPDATE SET occurrences = audit.occurrences + 1, at = excluded.at, request_id = excluded.request_id"
)


def record(conn: sa.Connection, entry: Entry) -> None:
    """Write ``entry`` in ``conn``'s transaction."""
    if entry.action not in ACTIONS:
        raise ValueError(f"unknown audit action {entry.action!r}")
    conn.execute(
        _INSERT,
        {
            "key_id": entry.key_id,
            "action": entry.action,
            "target": orjson.dumps(entry.target, default=str).decode(),
            "count": entry.count,
            "outcome": entry.outcome,
            "message": entry.message[:MAX_MESSAGE_CHARS] if entry.message else None,
            "request_id": entry.request_id,
        },
    )


def record_alone(engine: sa.Engine, entry: Entry) -> None:
    """Write ``entry`` in a transaction of its own; a failure to do so is logged, not raised."""
    try:
        with engine.begin() as conn:
            record(conn, entry)
    except Exception:
        log.exception("could not write the audit entry of a %s by %s", entry.action, entry.key_id)


@contextmanager
def audited(engine: sa.Engine, entry: Entry) -> Iterator[sa.Connection]:
    """A transaction for the action, which also writes ``entry`` (the caller sets its ``count``)
    before the commit. If the action raises, the transaction rolls back and the entry is written
    ``failed`` with the error, on its own; the error goes on."""
    try:
        with engine.begin() as conn:
            yield conn
            record(conn, entry)
    except Exception as exc:  # an error saying ``audit_outcome = "refused"`` is a refusal, not a failure
        entry.outcome = REFUSED if getattr(exc, "audit_outcome", None) == REFUSED else FAILED
        entry.message = f"{type(exc).__name__}: {exc}"
        entry.count = None
        record_alone(engine, entry)
        raise


# -- reading ----------------------------------------------------------------------------------


@dataclass
class Page:
    items: list[dict[str, Any]]
    next: int | None
    limit: int


def entry_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at,
        "key_id": row.key_id,
        "action": row.action,
        "target": row.target,
        "count": row.count,
        "outcome": row.outcome,
        "message": row.message,
        "request_id": row.request_id,
        "occurrences": row.occurrences,
        "first_at": row.first_at or row.at,
    }


def list_entries(
    conn: sa.Connection,
    *,
    action: str | None = None,
    key_id: str | None = None,
    since: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: int | None = None,
) -> Page:
    """Newest first; ``cursor`` is the ``next`` of the previous page (entries with a lower id)."""
    query = sa.select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit + 1)
    if action is not None:
        query = query.where(AUDIT.c.action == action)
    if key_id is not None:
        query = query.where(AUDIT.c.key_id == key_id)
    if since is not None:
        query = query.where(AUDIT.c.at >= since)
    if cursor is not None:
        query = query.where(AUDIT.c.id < cursor)
    rows = conn.execute(query).all()
    items = [entry_dict(r) for r in rows[:limit]]
    return Page(items, items[-1]["id"] if len(rows) > limit else None, limit)
