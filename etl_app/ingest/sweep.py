"""The outbox sweeper: re-drives whatever did not go out or did not settle within its lease."""

from __future__ import annotations

import sqlalchemy as sa
from celery import Celery

from etl_app.pipeline.messages import publish_claimed

# Records never published (the broker was down at accept time) are swept after this grace.
UNPUBLISHED_GRACE_SECONDS = 5

_CLAIM = sa.text(
    """
    WITH due AS (
        SELECT id FROM raw_records
        WHERE status = 'received'
          AND ((enqueued_at IS NULL AND received_at < now() - make_interval(secs => :grace))
               OR enqueued_at < now() - make_interval(secs => :lease))
        ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
    )
    UPDATE raw_records r SET enqueued_at = now() FROM due WHERE r.id = due.id
    RETURNING r.id, r.record_type
    """
)


def sweep(engine: sa.Engine, celery_app: Celery, *, lease_seconds: int, batch_size: int, chunk_size: int) -> int:
    """Claim due records (SKIP LOCKED, so several sweepers never take the same ones), publish
    them in chunks, and commit the claim only once they are out."""
    total = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                _CLAIM, {"grace": UNPUBLISHED_GRACE_SECONDS, "lease": lease_seconds, "limit": batch_size}
            ).all()
            publish_claimed(celery_app, rows, chunk_size)
        total += len(rows)
        if len(rows) < batch_size:
            return total
