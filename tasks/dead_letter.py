"""The dead-letter consumer: writes dead_letters and marks the raw records dead, atomically.

It runs in its own worker process (``dead_letter`` in the Procfile, queue ``dead_letter``), so a
flood of failures cannot starve the pipeline's workers.
"""

from __future__ import annotations

from functools import partial

from celery import shared_task

from etl_app import errors
from etl_app.dead_letters import actions
from etl_app.dead_letters.store import Failure, dead_letter
from etl_app.ingest.send import send_after_commit
from etl_app.names import DEAD_LETTER
from tasks.chunks import ChunkTask


@shared_task(name=DEAD_LETTER, base=ChunkTask, bind=True)
def record(self: ChunkTask, type_name: str, failures: list[dict], task_name: str) -> int:
    """Store each failure once (a redelivery changes nothing); returns how many were new.

    A ``missing_parent`` record whose parent landed while it was being dead-lettered is replayed
    at once (the parent's persist could not see it dead yet). Then the quality of the ingestions
    these dead letters settled is stored."""
    rows = [Failure.from_message(f) for f in failures]
    orphans = [f.raw_id for f in rows if f.error_type == errors.MISSING_PARENT]
    new = dead_letter(self.db, rows, task_name)
    replayed = actions.replay_if_parents_exist(self.db, self.runtime.registry, orphans)
    self.after_commit(
        partial(send_after_commit, self.runtime.publisher, replayed.records, timeout=None, what="replayed dead letters")
    )
    self.settle_after_commit(settled=len(new), raw_ids=[f.raw_id for f in rows])
    return len(new)
