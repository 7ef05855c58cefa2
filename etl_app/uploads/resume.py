"""Uploads whose parser went quiet: stored but never taken (the broker was down when the API sent
the parse task), or taken and not advanced for a lease (its message was lost with the broker).
The outbox sweeper sends their parse task again; a parser that then finds another one ahead of it
stops (:mod:`etl_app.uploads.parse`), so a parse sent twice reads every row once."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from etl_app.ingest.send import Publisher
from etl_app.models import sql
from etl_app.uploads.store import send_parse

log = logging.getLogger(__name__)

_STALLED = sql(
    "UPDATE uploads SET leased_at = now() WHERE id IN ("
    "  SELECT id FROM uploads WHERE status IN (:STORED, :PARSING) "
    "  AND (leased_at IS NULL OR leased_at < now() - make_interval(secs => :lease)) "
    "  ORDER BY leased_at NULLS FIRST LIMIT :limit FOR UPDATE SKIP LOCKED"
    ") RETURNING id"
)


def resend_stalled(conn: sa.Connection, publisher: Publisher, *, lease_seconds: int, commit, limit: int = 100) -> int:
    """Claim the stalled uploads (quiet for ``lease_seconds``; their lease starts again), commit,
    then send their parse tasks."""
    ids = [row[0] for row in conn.execute(_STALLED, {"lease": lease_seconds, "limit": limit})]
    commit()
    sent = sum(send_parse(publisher, upload_id, timeout=None) for upload_id in ids)
    if ids:
        log.info("outbox sweeper: re-sent the parse of %d of %d stalled uploads", sent, len(ids))
    return sent
