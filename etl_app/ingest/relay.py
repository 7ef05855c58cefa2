"""The outbox relay: small submissions share chains.

A chain per single record caps throughput at a third of Celery's task rate. Instead, the API
commits small submissions with ``enqueued_at`` unset and wakes the relay, a thread in each web
process. The relay waits a window for more records to arrive, claims every unpublished record
(:mod:`etl_app.ingest.claim`), commits the claim and sends one chain per chunk and type
(:func:`~etl_app.ingest.send.send_after_commit`); what the broker does not take is flagged
unpublished again, and the relay backs off (1 s doubling to 8 s). It also looks every second by
itself, so records of a web process that died after its commit are picked up too; the outbox
sweeper remains the last resort.

**The window adapts to the flow.** The worker pays for each message whatever it carries (the
prefork parent alone ~1.7 ms, three of them a chain), so a chain of a handful of records costs
the worker several ms per record, more than the web spends on it. The window therefore starts at
``ETL_RELAY_WINDOW_MS`` (100 ms) and doubles after each round that claimed less than a chunk, up
to ``ETL_RELAY_MAX_WINDOW_MS`` (1 s); a round that claimed a whole chunk halves it again. While
records trickle in they wait up to a second longer before they are sent, in chains carrying
that second's records; under a flood the rounds fill chunks and the window shrinks back. Only
the time to *settle* changes: the API commits and answers 202 before the relay is involved, and
every guarantee (the outbox before the 202, the leases, the sweeper, exactly once) is the
claim's and the chain's, not the window's. The window stays far below the sweeper's grace
(:data:`etl_app.ingest.claim.UNPUBLISHED_GRACE_SECONDS`), so the sweeper does not race it.

**A round closes when the records stop.** Waiting out the whole window after the last record of a
flood would add up to the window to the time every record takes to settle. So a round also
closes once its process has taken no record for a while: :data:`QUIET_SECONDS` (50 ms), or
:data:`QUIET_GAPS` times the usual gap between its records when they trickle in slower than that
(so a trickle still fills a window). Under a flood records come every few ms and rounds last the
window; once it stops, its last records go out 50 ms later. A record that comes alone after a
pause longer than the longest window goes out after 50 ms.

Each web process has its own relay, and any relay's round claims what every process committed
(the outbox is one table), so two processes' rounds interleave: at the longest window a record
waits about half of it. A single relay for the deployment (an advisory lock) would double the
records per chain again but needs a way to wake it from the other processes (NOTIFY, a round
trip per request) or a poll; the adaptive window gets most of the gain with neither.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from etl_app.errors import BrokerUnavailable
from etl_app.ingest import claim
from etl_app.ingest.send import Publisher, send_after_commit

log = logging.getLogger(__name__)

CLAIM_LIMIT = 20_000  # records one relay round claims at most

# A submission of at least this many accepted records (or of a whole chunk, when ETL_CHUNK_SIZE
# is smaller) publishes its own chains, with the values the API validated: at this size a chain
# is worth its messages already, and going through the relay would cost every record a claim (an
# outbox UPDATE) and a second validation, to save the worker a few messages. Chunks grow up to
# ETL_CHUNK_SIZE on both paths.
OWN_CHAINS_FROM = 500


def goes_through_relay(accepted: int, chunk_size: int) -> bool:
    """Whether a submission of ``accepted`` records is left to the relay (see :data:`OWN_CHAINS_FROM`)."""
    return accepted < min(chunk_size, OWN_CHAINS_FROM)


def relay_once(publisher: Publisher, *, limit: int = CLAIM_LIMIT) -> int:
    """Claim what is unpublished now (commit), then send it; raises
    :class:`~etl_app.errors.BrokerUnavailable` when the broker did not take it."""
    with publisher.engine.begin() as conn:
        claimed = claim.claim(conn, limit=limit)
    n = claim.count(claimed)
    if not send_after_commit(publisher, claimed, timeout=publisher.timeout, what="relayed records"):
        raise BrokerUnavailable(f"the broker did not take {n} relayed records")
    return n


# A round closes once its process has had no record for QUIET_SECONDS, or for QUIET_GAPS times
# the usual gap between its records when that is longer (see the module's docstring).
QUIET_SECONDS = 0.05
QUIET_GAPS = 4

# The longest the relay waits between two rounds the broker refused: once it is back, the relay
# sends what waited in the outbox within this, usually before the sweeper's next run does.
MAX_BACKOFF_SECONDS = 8.0


class Relay:
    """One relay thread per process, started on first use (after any fork). ``publisher`` gives
    the process's current :class:`~etl_app.ingest.send.Publisher` at each round (its connections
    are the process's own, made again after a fork)."""

    def __init__(
        self,
        publisher: Callable[[], Publisher],
        *,
        window: float = 0.1,
        idle: float = 1.0,
        max_window: float | None = None,
        full: int = 500,
    ) -> None:
        self.publisher = publisher
        self.window, self.idle = window, idle
        # the window grows to max_window while rounds claim fewer than ``full`` records (a chunk)
        self.max_window = max(window, window if max_window is None else max_window)
        self.full = full
        self.current_window = window
        self.quiet = QUIET_SECONDS
        self._last_notify = float("-inf")  # time.monotonic() of the last record
        self._gap: float | None = None  # the usual gap between records (a moving average); None: no flow
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def _stopped(self) -> bool:
        return self._stop.is_set()

    def notify(self) -> None:
        """Records were committed unpublished: send them soon."""
        now = time.monotonic()
        gap, self._last_notify = now - self._last_notify, now
        if gap > self.max_window:
            self._gap = None  # the first record after a pause: not a flow (yet)
        else:
            self._gap = gap if self._gap is None else self._gap + (gap - self._gap) / 4
        self._ensure_thread()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread and wait (at most ``timeout`` seconds) for its current round to finish
        (used when an app is torn down): once this returns, this relay claims nothing more. An
        app torn down while another takes over the same database must not go on sending that
        one's records to its own broker."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and self._pid == os.getpid():
            thread.join(timeout)

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid() or self._stopped:
            return
        with self._lock:
            if self._pid != os.getpid():
                self._wake = threading.Event()
                self._thread = threading.Thread(target=self._run, name="etl-outbox-relay", daemon=True)
                self._thread.start()
                self._pid = os.getpid()

    def _run(self) -> None:
        backoff = self.idle
        while not self._stopped:
            if backoff > self.idle:
                # The broker refused the last round: wait the whole backoff, however many requests
                # wake the relay meanwhile (each would fail too and double it; during an outage the
                # backoff would soon be at its cap, and the relay late once the broker is back).
                self._sleep(backoff)
                woken = False
            else:
                woken = self._wake.wait(timeout=backoff)
            if self._stopped:
                return
            if woken:
                self._gather()  # let concurrent requests join this round
                if self._stopped:
                    return
            self._wake.clear()
            try:
                # a full round means there may be more
                sent = last = relay_once(self.publisher())
                while last >= CLAIM_LIMIT:
                    last = relay_once(self.publisher())
                    sent += last
                if backoff > self.idle and sent:
                    log.info("outbox relay: broker back, sent %d records", sent)
                backoff = self.idle
                self._adapt(sent)
            except Exception as exc:  # noqa: BLE001 - broker or database down: try again later
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                log.warning("outbox relay: %s; retrying in %.0fs", exc, backoff)

    def _gather(self) -> None:
        """Wait for the round's records: the window, or less once this process has had none for
        :meth:`_quiet` seconds; returns early when the relay is stopped."""
        deadline = time.monotonic() + self.current_window
        while not self._stopped:
            now = time.monotonic()
            until = min(deadline, self._last_notify + self._quiet())
            if until <= now:
                return
            self._stop.wait(until - now)

    def _quiet(self) -> float:
        """How long without a record closes a round (see :data:`QUIET_GAPS`)."""
        gap = self._gap
        return self.quiet if gap is None else max(self.quiet, QUIET_GAPS * gap)

    def _adapt(self, sent: int) -> None:
        """The next round's window: longer after a round that did not fill a chunk, shorter after
        one that did (see the module's docstring)."""
        if sent >= self.full:
            self.current_window = max(self.window, self.current_window / 2)
        else:
            self.current_window = min(self.max_window, self.current_window * 2)

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, ignoring wake-ups; returns early only when the relay is stopped."""
        self._stop.wait(seconds)
