"""Scheduled jobs run by Celery beat (one beat instance; every job is idempotent per run)."""

from __future__ import annotations

import logging

from celery import shared_task

from etl_app.ingest import sweep
from etl_app.pipeline.messages import PIPELINE_QUEUE, queue_depth
from tasks.base import EtlTask

log = logging.getLogger(__name__)


@shared_task(name="etl.beat.sweep_outbox", base=EtlTask, bind=True)
def sweep_outbox(self: EtlTask) -> int:
    """Re-enqueue unsettled records whose last enqueue is older than the lease.

    It does not retry on errors (beat runs it again next interval), and it waits while the
    pipeline queue holds more than ETL_SWEEP_MAX_QUEUE messages: records in a long queue are
    not lost, only late, and re-sending them would lengthen the queue further."""
    s = self.runtime.settings
    try:
        depth = queue_depth(self.app, PIPELINE_QUEUE)
    except Exception as exc:  # noqa: BLE001 - broker down: nothing can be sent now anyway
        log.warning("outbox sweeper: broker unavailable (%s); next interval", exc)
        return 0
    if depth > s.sweep_max_queue:
        log.info("outbox sweeper: %d messages queued (> %d); waiting for the queue to drain", depth, s.sweep_max_queue)
        return 0
    try:
        swept = sweep.sweep(
            self.runtime.engine,
            self.app,
            lease_seconds=s.outbox_lease_seconds,
            batch_size=s.sweep_batch_size,
            chunk_size=s.chunk_size,
        )
    except Exception as exc:  # noqa: BLE001 - beat runs it again next interval; a retry would only pile up
        log.warning("outbox sweeper: %s; next interval", exc)
        return 0
    if swept:
        log.info("outbox sweeper re-enqueued %d records", swept)
    return swept
