"""Scheduled jobs run by Celery beat (one beat instance; every job is idempotent per run)."""

from __future__ import annotations

import logging

from celery import shared_task

from etl_app.ingest import claim
from etl_app.ingest.send import send_after_commit
from etl_app.names import PIPELINE_QUEUE, SWEEP_OUTBOX
from etl_app.pipeline.messages import queue_depth
from tasks.base import EtlTask

log = logging.getLogger(__name__)


@shared_task(name=SWEEP_OUTBOX, base=EtlTask, bind=True, retries_transient_errors=False)
def sweep_outbox(self: EtlTask) -> int:
    """Re-enqueue unsettled records whose last enqueue is older than the lease (and records never
    published, after a short grace), in batches: each batch is claimed and committed, then sent.

    It does not retry on errors (beat runs it again next interval), and it waits while the
    pipeline queue holds more than ETL_SWEEP_MAX_QUEUE messages: records in a long queue are
    not lost, only late, and re-sending them would lengthen the queue further."""
    settings = self.runtime.settings
    try:
        depth = queue_depth(self.app, PIPELINE_QUEUE)
    except Exception as exc:  # noqa: BLE001 - broker down: nothing can be sent now anyway
        log.warning("outbox sweeper: broker unavailable (%s); next interval", exc)
        return 0
    if depth > settings.sweep_max_queue:
        log.info(
            "outbox sweeper: %d messages queued (> %d); waiting for the queue to drain", depth, settings.sweep_max_queue
        )
        return 0
    swept = 0
    while True:
        claimed = claim.claim(
            self.db,
            limit=settings.sweep_batch_size,
            grace=claim.UNPUBLISHED_GRACE_SECONDS,
            lease=settings.outbox_lease_seconds,
        )
        self.commit()  # the claim, before the send
        if not send_after_commit(self.runtime, claimed, timeout=None, what="swept records"):
            # flagged unpublished again: the next run retries them
            log.warning("outbox sweeper: the broker did not take the records; next interval")
            break
        swept += claim.count(claimed)
        if claim.count(claimed) < settings.sweep_batch_size:
            break
    if swept:
        log.info("outbox sweeper re-enqueued %d records", swept)
    return swept
