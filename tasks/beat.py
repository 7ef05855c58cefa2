"""Scheduled jobs run by Celery beat (one beat instance; every job is idempotent per run)."""

from __future__ import annotations

import logging

from celery import shared_task

from etl_app import outbox
from tasks.base import EtlTask

log = logging.getLogger(__name__)


@shared_task(name="etl.beat.sweep_outbox", base=EtlTask, bind=True)
def sweep_outbox(self: EtlTask) -> int:
    """Re-enqueue unsettled records whose last enqueue is older than the lease."""
    s = self.runtime.settings
    swept = outbox.sweep(
        self.runtime.engine,
        self.app,
        lease_seconds=s.outbox_lease_seconds,
        batch_size=s.sweep_batch_size,
        chunk_size=s.chunk_size,
    )
    if swept:
        log.info("outbox sweeper re-enqueued %d records", swept)
    return swept
