"""One slice of an upload's parse, called as the ``etl.upload.parse`` task calls it (tasks/uploads.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from etl_app.ingest.rejections import RejectionLimits
from etl_app.uploads import parse
from etl_app.uploads.caps import upload_limits


def parse_slice_as_the_task(
    runtime: Any,
    engine: Any,
    ident: uuid.UUID,
    *,
    slice_chunks: int,
    after_commit: Callable[[Callable[[], Any]], None] = lambda send: None,
) -> str:
    """Read the next ``slice_chunks`` chunks of upload ``ident`` with the caps and the rejection
    allowance of ``runtime``'s settings, in a transaction of its own; MORE, DONE or OVERTAKEN."""
    with engine.connect() as conn:
        outcome = parse.parse_slice(
            runtime.publisher,
            runtime.registry,
            conn,
            ident,
            commit=conn.commit,
            after_commit=after_commit,
            limits=upload_limits(runtime.settings),
            slice_chunks=slice_chunks,
            rejection_limits=RejectionLimits.of(runtime.settings),
        )
        conn.commit()
    return outcome
