"""The parse task of uploaded files (:mod:`etl_app.uploads.parse`): one slice a call, then the
next slice sent to the end of the ``etl`` queue."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import shared_task

from etl_app import names
from etl_app.uploads import parse
from etl_app.uploads.formats import Limits
from tasks.base import EtlTask, PermanentFailure

log = logging.getLogger(__name__)


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
    outcome = parse.parse_slice(
        self.runtime.publisher,
        self.runtime.registry,
        self.db,
        upload_id,
        commit=self.commit,
        after_commit=self.after_commit,
        limits=Limits.of(self.runtime.settings),
    )
    if outcome == parse.MORE:
        self.after_commit(lambda: self.apply_async(args=[message], queue=names.PIPELINE_QUEUE))
    elif outcome == parse.DONE:
        self.after_commit(
            lambda: parse.after_parse(self.runtime.engine, self.runtime.registry, self.runtime.settings, upload_id)
        )
    return outcome
