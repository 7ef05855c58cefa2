"""Idempotency keys: a submit sent again with the same key gets the first answer, and nothing is
stored twice.

The rule, as a short proof. A key's row (``idempotency_keys``: the API key's id as ``owner``, the
key, the request's fingerprint and the answer) is written by :func:`claim` as the first statement
of the transaction that stores the submission (the ingestion, its outbox rows or its file), as an
``INSERT … ON CONFLICT (owner, key)`` that leaves a live row alone (:data:`CLAIM_INSERT`). So:

- the row and the submission commit together or not at all: no crash can keep one without the
  other, and an answer is stored exactly when its submission is;
- of two requests with one key, the second one's insert waits on the uniqueness check until the
  first one's transaction ends (PostgreSQL's unique index, not a lock of ours): if the first
  committed, the insert changes nothing and returns no row, and the second raises
  :class:`KeyTaken`, stores nothing and answers what :func:`find` reads (the first answer, or a
  422 for another request); if the first rolled back, the insert goes through and the second does
  the work. Exactly one submission per key is stored, whatever the number of requests, processes
  or hosts;
- a key whose row expired (``expires_at`` passed, not yet deleted by the retention job) is free:
  the insert then takes the row over (``DO UPDATE … WHERE expires_at <= now``) instead of leaving
  it, so an expired key behaves as a key never seen.

Only accepted submissions (202) are kept: a request refused before anything is stored (a 4xx)
leaves no row, and sending it again is judged again.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa


class KeyTaken(Exception):
    """The key already has an answer, committed by another request: replay it (nothing stored)."""


@dataclass(frozen=True)
class Claim:
    """A key's row as the request that stores the submission writes it."""

    owner: str  # the API key's id (etl_app.roles.key_id): keys of two clients never meet
    key: str
    fingerprint: str  # what the request said (method, path, media type, body), hashed
    ingestion_id: uuid.UUID
    status: int
    body: str  # the answer's JSON, exactly as sent
    created_at: datetime
    expires_at: datetime

    def params(self) -> dict[str, object]:
        """The placeholders of :data:`CLAIM_INSERT` (``claim_`` and the field's name)."""
        return {f"claim_{name}": value for name, value in asdict(self).items()}


@dataclass(frozen=True)
class Stored:
    """A key's committed answer."""

    fingerprint: str
    ingestion_id: uuid.UUID
    status: int
    body: str


# The VALUES and the conflict clause of a claim, for this module's statement and for the one
# statement that stores a single record with its claim (etl_app.ingest.outbox). The placeholders
# are psycopg's, bound by name (Claim.params).
CLAIM_INSERT = (
    "INSERT INTO idempotency_keys (owner, key, fingerprint, ingestion_id, status, body, created_at, expires_at) "
    "VALUES (%(claim_owner)s, %(claim_key)s, %(claim_fingerprint)s, %(claim_ingestion_id)s, %(claim_status)s, "
    "%(claim_body)s, %(claim_created_at)s, %(claim_expires_at)s) "
    "ON CONFLICT (owner, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
    "ingestion_id = EXCLUDED.ingestion_id, status = EXCLUDED.status, body = EXCLUDED.body, "
    "created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at "
    "WHERE idempotency_keys.expires_at <= EXCLUDED.created_at "
    "RETURNING 1"
)
_SELECT = "SELECT fingerprint, ingestion_id, status, body FROM idempotency_keys WHERE owner = :owner AND key = :key"
_FIND = sa.text(_SELECT)
_FIND_LIVE = sa.text(f"{_SELECT} AND expires_at > :now")
_PURGE = sa.text(
    """
    WITH due AS (
        SELECT owner, key FROM idempotency_keys WHERE expires_at <= :now
        ORDER BY expires_at LIMIT :size FOR UPDATE SKIP LOCKED
    )
    DELETE FROM idempotency_keys k USING due WHERE k.owner = due.owner AND k.key = due.key
    """
)


def claim(conn: sa.Connection, c: Claim) -> None:
    """Write the key's row as the transaction's first statement (see the module's proof); raises
    :class:`KeyTaken` when another request's answer holds it. The caller's transaction then
    stores the submission (or rolls back on KeyTaken)."""
    if conn.exec_driver_sql(CLAIM_INSERT, c.params()).first() is None:
        raise KeyTaken(c.key)


def find(engine: sa.Engine, owner: str, key: str, *, live_at: datetime | None = None) -> Stored | None:
    """The key's committed answer; None if there is none, or (``live_at``) if it had expired by
    then. Without ``live_at`` an expired one is found too: the caller met it live."""
    statement, params = _FIND, {"owner": owner, "key": key}
    if live_at is not None:
        statement, params = _FIND_LIVE, {**params, "now": live_at}
    with engine.connect() as conn:
        row = conn.execute(statement, params).first()
    return Stored(row.fingerprint, row.ingestion_id, row.status, row.body) if row else None


def purge_expired(conn: sa.Connection, now: datetime, size: int) -> int:
    """Delete up to ``size`` keys expired at ``now`` (oldest first, along ``expires_at``'s index;
    rows another transaction holds are skipped); how many were deleted. The caller commits."""
    return conn.execute(_PURGE, {"now": now, "size": size}).rowcount
