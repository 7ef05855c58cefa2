"""The outbox relay: small submissions share chains.

A chain per single record caps throughput at a third of Celery's task rate. Instead, the API
commits small submissions with ``enqueued_at`` unset and wakes the relay, a thread in each web
process. The relay waits ``ETL_RELAY_WINDOW_MS`` (100 ms) for more records to arrive, claims every
unpublished record (``FOR UPDATE SKIP LOCKED``, so relays of several processes never take the
same ones), publishes one chain per chunk and type, and commits the claim. It also looks
every second by itself, so records of a web process that died after its commit are picked up
too; the outbox sweeper remains the last resort.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import sqlalchemy as sa
from celery import Celery

from etl_app.pipeline.messages import publish_claimed

log = logging.getLogger(__name__)

CLAIM_LIMIT = 20_000  # records one relay round claims at most

_CLAIM = sa.text(
    """
    WITH due AS (
        SELECT id FROM raw_records WHERE status = 'received' AND enqueued_at IS NULL
        ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
    )
    UPDATE raw_records r SET enqueued_at = now() FROM due WHERE r.id = due.id
    RETURNING r.id, r.record_type
    """
)


def relay_once(engine: sa.Engine, celery_app: Celery, *, chunk_size: int, limit: int = CLAIM_LIMIT) -> int:
    """Claim and publish what is unpublished now; the claim commits only once it is out."""
    with engine.begin() as conn:
        rows = conn.execute(_CLAIM, {"limit": limit}).all()
        publish_claimed(celery_app, rows, chunk_size)
    return len(rows)


class Relay:
    """One relay thread per process, started on first use (after any fork)."""

    def __init__(
        self, engine: sa.Engine, celery_app: Celery, *, chunk_size: int, window: float = 0.1, idle: float = 1.0
    ) -> None:
        self.engine, self.celery, self.chunk_size = engine, celery_app, chunk_size
        self.window, self.idle = window, idle
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._stopped = False

    def notify(self) -> None:
        """Records were committed unpublished: send them soon."""
        self._ensure_thread()
        self._wake.set()

    def stop(self) -> None:
        """End the thread after its current round (used when an app is torn down)."""
        self._stopped = True
        self._wake.set()

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid() or self._stopped:
            return
        with self._lock:
            if self._pid != os.getpid():
                self._wake = threading.Event()
                threading.Thread(target=self._run, name="etl-outbox-relay", daemon=True).start()
                self._pid = os.getpid()

    def _run(self) -> None:
        backoff = self.idle
        while not self._stopped:
            woken = self._wake.wait(timeout=backoff)
            if self._stopped:
                return
            if woken:
                time.sleep(self.window)  # let concurrent requests join this round
            self._wake.clear()
            try:
                # a full round means there may be more
                while relay_once(self.engine, self.celery, chunk_size=self.chunk_size) >= CLAIM_LIMIT:
                    pass
                backoff = self.idle
            except Exception as exc:  # noqa: BLE001 - broker or database down: try again later
                log.warning("outbox relay: %s; retrying in %.0fs", exc, backoff)
                backoff = min(backoff * 2, 30.0)
