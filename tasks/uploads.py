"""The parse task of uploaded files (:mod:`etl_app.uploads.parse`): one slice a call, then the
next slice sent to the end of the ``uploads`` queue (a parse message still on the ``etl`` queue,
sent by an earlier version, runs where it is and sends its next slice to ``uploads``).

A file is read no faster than the pipeline takes its records in: while the ``etl`` queue holds
more than :data:`AHEAD_MESSAGES` messages (chunks waiting for a stage), a slice is not read; its
message comes back after :data:`WAIT_SECONDS` (and the upload's lease is renewed, so the sweeper
does not take it for stalled). So the values a file's chunks leave in Redis stay bounded, and API
batches are not queued behind a whole file's chunks."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import shared_task

from etl_app import names
from etl_app.config import Settings
from etl_app.ingest.rejections import RejectionLimits
from etl_app.pipeline.queues import BrokerUnavailable, queue_depths
from etl_app.uploads import parse
from etl_app.uploads.caps import upload_limits
from tasks.base import EtlTask, PermanentFailure

log = logging.getLogger(__name__)

# Two slices' worth of chunks (each a message on the etl queue until its chain ends).
AHEAD_MESSAGES = 2 * parse.SLICE_CHUNKS
WAIT_SECONDS = 1.0
BROKER_TIMEOUT_SECONDS = 2.0


def pipeline_backlog(settings: Settings) -> int | None:
    """Messages waiting on the ``etl`` queue; None if the broker did not answer (the slice is
    then read: a broker that is down fails its sends, which retry as usual)."""
    try:
        return queue_depths(settings, BROKER_TIMEOUT_SECONDS).read()[names.PIPELINE_QUEUE]
    except BrokerUnavailable as exc:
        log.warning("could not read the etl queue's depth (%s): reading the slice", exc)
        return None


class ParseTask(EtlTask):
    """Transient errors (the database, the broker) retry as every task does; once retries run
    out the upload waits for the sweeper. Anything else (a reader that fails in a way the format
    checks did not foresee, or a file that killed its worker ``ETL_MAX_DELIVERIES`` times) fails
    the upload with the error at the row it reached, instead of trying it again forever."""

    def on_permanent_failure(self, message: Any, failure: PermanentFailure) -> None:
        if not isinstance(message, dict):
            super().on_permanent_failure(message, failure)
            return
        try:
            upload_id = uuid.UUID(str(message.get("upload_id")))
        except ValueError:
            log.error("%s: unusable message dropped (%s)", self.name, failure.error)
            return
        error_type, error, tb = failure.error_type, failure.error, failure.traceback
        with self.runtime.engine.begin() as conn:
            upload = parse.load(conn, upload_id)
            if upload is None:
                return
            failed = parse.mark_failed(conn, upload, f"could not read the file at row {upload.rows_read + 1}: {error}")
        log.error("%s: upload %s failed (%s): %s\n%s", self.name, upload_id, error_type, error, tb or "")
        if failed:
            parse.after_parse(self.runtime.engine, self.runtime.registry, self.runtime.settings, upload_id)


@shared_task(name=names.PARSE_UPLOAD, base=ParseTask, bind=True)
def parse_upload(self: ParseTask, message: dict) -> str:
    """``message``: ``{"upload_id": "<uuid>"}``. Returns the slice's outcome."""
    upload_id = uuid.UUID(str(message["upload_id"]))
    backlog = pipeline_backlog(self.runtime.settings)
    # (an upload read already, failed or gone renews nothing: parse_slice says DONE for it)
    if backlog is not None and backlog > AHEAD_MESSAGES and parse.renew_lease(self.db, upload_id):
        self.after_commit(lambda: self.apply_async(args=[message], queue=names.UPLOADS_QUEUE, countdown=WAIT_SECONDS))
        return parse.WAITING
    outcome = parse.parse_slice(
        self.runtime.publisher,
        self.runtime.registry,
        self.db,
        upload_id,
        commit=self.commit,
        after_commit=self.after_commit,
        rejection_limits=RejectionLimits.of(self.runtime.settings),
        limits=upload_limits(self.runtime.settings),
    )
    if outcome == parse.MORE:
        self.after_commit(lambda: self.apply_async(args=[message], queue=names.UPLOADS_QUEUE))
    elif outcome == parse.DONE:
        self.after_commit(
            lambda: parse.after_parse(self.runtime.engine, self.runtime.registry, self.runtime.settings, upload_id)
        )
    return outcome
