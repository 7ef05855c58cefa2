"""outbox-sweeper: re-enqueue the unsettled records that no live chain holds.

Beat runs it every ``ETL_SWEEP_INTERVAL_SECONDS`` (task ``etl.beat.outbox-sweeper``) through the
runner like every job, so two beats never sweep at once; its runs are recorded in job_runs only
when they re-sent records or failed (``record="when_rows"`` in the registry).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from etl_app.ingest import claim
from etl_app.ingest.send import send_after_commit
from etl_app.jobs.context import JobContext, JobTools
from etl_app.names import LOOKUPS_QUEUE, PIPELINE_QUEUE
from etl_app.pipeline.messages import oldest_queued_at
from etl_app.quality import settle
from etl_app.uploads.resume import resend_stalled

log = logging.getLogger(__name__)


def run_sweeper(ctx: JobContext, tools: JobTools) -> int:
    """Re-enqueue the unsettled records that no live chain holds (see :mod:`etl_app.ingest.claim`
    for the lease rule), and records never published after a short grace; at most
    ``ETL_SWEEP_MAX_RECORDS`` a run, in batches of ``ETL_SWEEP_BATCH_SIZE``, each claimed and
    committed, then sent.

    However long the ``etl`` and ``lookups`` queues, it runs: records waiting in the queue are not due (their
    lease is younger than the oldest queued message), so it re-sends only what was lost, and a
    lost record waits at most one lease plus one queue wait. On Redis the oldest queued message
    is read from the queue itself; on RabbitMQ, which cannot show a queued message, from the
    queue's head as the workers record it (:mod:`etl_app.pipeline.queue_head`). Where that time
    is unknown, the sweeper goes by the lease alone, and records queued longer than a lease are
    sent once more (every stage is idempotent).

    First it catches up on quality: settled ingestions that have none stored yet (a worker that
    stopped between its commit and its settle, an upload whose last rows were all refused) are
    measured, at most :data:`etl_app.quality.settle.CATCH_UP_LIMIT` a run."""
    settings = ctx.settings
    _catch_up_quality(ctx, tools)
    try:
        since = queued_since(tools, settings.broker_key_prefix)
    except Exception as exc:  # noqa: BLE001 - broker down: nothing can be sent now anyway
        log.warning("outbox sweeper: broker unavailable (%s); next interval", exc)
        return 0
    swept = 0
    while swept < settings.sweep_max_records:
        limit = min(settings.sweep_batch_size, settings.sweep_max_records - swept)
        claimed = claim.claim(
            ctx.conn,
            limit=limit,
            grace=claim.UNPUBLISHED_GRACE_SECONDS,
            lease=settings.outbox_lease_seconds,
            queued_since=since,
        )
        ctx.commit()  # the claim, before the send
        if not send_after_commit(tools.publisher, claimed, timeout=None, what="swept records"):
            # flagged unpublished again: the next run retries them
            log.warning("outbox sweeper: the broker did not take the records; next interval")
            break
        swept += claim.count(claimed)
        if claim.count(claimed) < limit:
            break
    if swept:
        log.info(
            "outbox sweeper re-enqueued %d records (the oldest queued message was sent %s)",
            swept,
            f"{since.isoformat()}" if since is not None else "at an unknown time, or the queues are empty",
        )
    swept += resend_stalled(ctx.conn, tools.publisher, lease_seconds=settings.outbox_lease_seconds, commit=ctx.commit)
    return swept


def queued_since(tools: JobTools, prefix: str) -> datetime | None:
    """When the oldest message still waiting in the ``etl`` or ``lookups`` queue was sent; None
    when both are empty or that time is unknown (the claim then goes by the lease alone). Raises
    if the broker is unreachable."""
    sent_at = _oldest(
        oldest_queued_at(tools.publisher.celery, queue, cache=tools.cache, prefix=prefix)
        for queue in (PIPELINE_QUEUE, LOOKUPS_QUEUE)
    )
    return datetime.fromtimestamp(sent_at, UTC) if sent_at is not None else None


def _oldest(times) -> float | None:
    """The earliest of these send times (None: unknown or empty), None if all are."""
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _catch_up_quality(ctx: JobContext, tools: JobTools) -> None:
    """Measure the settled ingestions without quality; a failure is logged, the sweep goes on."""
    try:
        stored = settle.catch_up(ctx.conn, tools.registry, settings=ctx.settings, commit=ctx.commit)
    except Exception:
        log.exception("outbox sweeper: could not catch up on ingestion quality; next interval")
        ctx.conn.rollback()
        return
    if stored:
        log.info("outbox sweeper measured %d settled ingestions", len(stored))
