"""retention: the raw payloads of records persisted more than ``ETL_RAW_RETENTION_DAYS`` ago.

A ``persisted`` raw record settled when its status became ``persisted`` (``updated_at``, which
nothing moves afterwards: replays, edits and the sweeper touch only dead or received records).
Its stored row, with the derived fields and lineage, is what readers use; the payload as
received only served validation, which never runs again for a settled record. So the payload
becomes null and ``payload_dropped_at`` says when. ``received`` records (still in flight) and
``dead`` ones (replayable, and their dead letter keeps its own copy in ``dead_letters.payload``,
which this job never touches) keep theirs. Works in batches of ``ETL_JOB_BATCH_SIZE`` ids, each
committed, along the partial index ``ix_raw_records_payload_kept``.

Uploaded files go the same way: the bytes (``upload_chunks``) of an upload read (``parsed`` or
``failed``) more than ``ETL_RAW_RETENTION_DAYS`` ago are deleted, one upload a transaction, and
``uploads.bytes_dropped_at`` says when; the upload's row (name, size, checksum, rows read) stays.

Submits' idempotency keys (``idempotency_keys``, etl_app.ingest.idempotency) whose
``expires_at`` has passed are deleted, ``ETL_JOB_BATCH_SIZE`` a transaction, along their
``expires_at`` index; a key that expired but is not deleted yet is already free to use again.

The job's row count is the payloads dropped, plus the uploads whose bytes were dropped, plus the
idempotency keys deleted.
"""

from __future__ import annotations

from datetime import timedelta

from etl_app.ingest import idempotency
from etl_app.jobs.context import JobContext
from etl_app.models import sql

_BATCH = sql(
    """
    WITH due AS (
        SELECT id FROM raw_records
        WHERE status = :PERSISTED AND payload_dropped_at IS NULL AND updated_at < :cutoff
        ORDER BY updated_at LIMIT :size FOR UPDATE SKIP LOCKED
    )
    UPDATE raw_records r SET payload = NULL, payload_dropped_at = :now
    FROM due WHERE r.id = due.id AND r.status = :PERSISTED
    """
)


_UPLOAD = sql(
    """
    WITH due AS (
        SELECT id FROM uploads
        WHERE status IN (:PARSED, :FAILED) AND bytes_dropped_at IS NULL AND parsed_at < :cutoff
        ORDER BY parsed_at LIMIT 1 FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM upload_chunks c USING due WHERE c.upload_id = due.id
    )
    UPDATE uploads u SET bytes_dropped_at = :now FROM due WHERE u.id = due.id
    """
)


def run_retention(ctx: JobContext) -> int:
    cutoff = ctx.now - timedelta(days=ctx.settings.raw_retention_days)
    size = ctx.settings.job_batch_size
    dropped = 0
    while True:
        done = ctx.conn.execute(_BATCH, {"cutoff": cutoff, "now": ctx.now, "size": size}).rowcount
        ctx.commit()
        dropped += done
        if done < size:
            break
    while ctx.conn.execute(_UPLOAD, {"cutoff": cutoff, "now": ctx.now}).rowcount:
        ctx.commit()
        dropped += 1
    while True:
        done = idempotency.purge_expired(ctx.conn, ctx.now, size)
        ctx.commit()
        dropped += done
        if done < size:
            break
    ctx.commit()
    return dropped
