"""Scheduled jobs run by Celery beat (one beat instance; every job is idempotent per run)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from celery import shared_task

from etl_app.ingest import claim
from etl_app.ingest.send import send_after_commit
from etl_app.names import PIPELINE_QUEUE, SWEEP_OUTBOX
from etl_app.pipeline.messages import oldest_queued_at
from tasks.base import EtlTask

log = logging.getLogger(__name__)


@shared_task(name=SWEEP_OUTBOX, base=EtlTask, bind=True, retries_transient_errors=False)
def sweep_outbox(self: EtlTask) -> int:
    """Re-enqueue the unsettled records that no live chain holds (see :mod:`etl_app.ingest.claim`
    for the lease rule), and records never published after a short grace; at most
    ``ETL_SWEEP_MAX_RECORDS`` a run, in batches of ``ETL_SWEEP_BATCH_SIZE``, each claimed and
    committed, then sent.

    However long the ``etl`` queue, it runs: records waiting in the queue are not due (their
    lease is younger than the oldest queued message), so it re-sends only what was lost, and a
    lost record waits at most one lease plus one queue wait. It does not retry on errors (beat
    runs it again next interval)."""
    settings = self.runtime.settings
    try:
        sent_at = oldest_queued_at(self.app, PIPELINE_QUEUE)
    except Exception as exc:  # noqa: BLE001 - broker down: nothing can be sent now anyway
        log.warning("outbox sweeper: broker unavailable (%s); next interval", exc)
        return 0
    queued_since = datetime.fromtimestamp(sent_at, UTC) if sent_at is not None else None
    swept = 0
    while swept < settings.sweep_max_records:
        limit = min(settings.sweep_batch_size, settings.sweep_max_records - swept)
        claimed = claim.claim(
            self.db,
            limit=limit,
            grace=claim.UNPUBLISHED_GRACE_SECONDS,
            lease=settings.outbox_lease_seconds,
            queued_since=queued_since,
        )
        self.commit()  # the claim, before the send
        if not send_after_commit(self.runtime, claimed, timeout=None, what="swept records"):
            # flagged unpublished again: the next run retries them
            log.warning("outbox sweeper: the broker did not take the records; next interval")
            break
        swept += claim.count(claimed)
        if claim.count(claimed) < limit:
            break
    if swept:
        log.info("outbox sweeper re-enqueued %d records", swept)
    return swept
