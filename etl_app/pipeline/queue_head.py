"""How far the workers have got into a RabbitMQ queue, in time: the head of the queue, measured.

The outbox sweeper needs when the oldest message still waiting in the ``etl`` and ``lookups``
queues was sent (:func:`etl_app.pipeline.messages.oldest_queued_at`, and :mod:`etl_app.ingest.claim`
for why). On Redis it reads that message itself (the last element of the queue's list). AMQP has
no peek: a message can only be seen by taking it out of the queue. So on RabbitMQ the workers
tell it instead, as they take messages:

- A queue is first in, first out, so every message still waiting in it was sent after the
  messages a worker has already taken from it. The **head** of a queue is the latest send time
  (header ``etl_sent_at``) of any message a worker has taken from it: a lower bound of the send
  time of every message still waiting there.
- The worker's consumer (its main process, Celery's ``task_received`` signal, which sees each
  message as it is delivered, with its routing key and headers) keeps, per queue, the latest send
  time it has seen, and :class:`HeadRecorder` writes it to the cache Redis at most once per
  :data:`FLUSH_SECONDS` (a background thread: the consumer's event loop never waits on Redis),
  as a max-update (:data:`_RAISE`, a Lua script: the key only ever grows, whatever order the
  writes of several workers arrive in), under ``<ETL_BROKER_KEY_PREFIX>etl:queue_head:<queue>``.
- A message that comes back late with an old send time (a countdown from RabbitMQ's delay
  queues) leaves a max() unchanged.
- A message RabbitMQ delivers again (``redelivered``: a worker's connection died before its ack,
  a consumer gave it back, a channel closed before its acks were settled) is not counted at all:
  such messages are not in their queue's order. RabbitMQ 3.10 put a quorum queue's returned
  messages ahead of the ready ones, shuffled: 1,000 messages taken with ``basic.get``, acked,
  and the channel closed at once came back 967 of them, redelivered, before everything else. A
  returned message sent moments ago then raised the head past messages sent seconds before that
  were still waiting, and the sweeper re-sent the records of all of them (50,000 in one run of
  the fault test). Leaving them out only lowers the max, which stays a lower bound.

Where the bound is loose, it errs on the safe side for the records:

- the head is too late when a message waits behind a later one (two producers whose publishes
  cross): a record of such a message may be re-sent once (every stage is idempotent); the
  claim's half-lease margin covers crossing publishes;
- the head is too early (old) while no worker takes anything from a queue that holds messages:
  the sweeper then leaves alone the records leased after it, until the workers move on; no
  worker would run them sooner.

A queue whose head was never recorded (no worker has taken a message from it since the key was
made; a new cache Redis) has an unknown age: the sweeper then goes by the lease alone, as it did
before the head was measured, and re-sends what waits longer than a lease. Unknown never hides a
lost record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

SENT_AT_HEADER = "etl_sent_at"  # every message etl_app sends: when (etl_app.pipeline.messages.stamp_sent_at)
FLUSH_SECONDS = 1.0  # a worker writes each queue's head at most this often

# KEYS: the heads to raise; ARGV: their new values, in the same order. A key is set only when the
# new value is greater than the one it holds (or it holds none). Returns how many were raised.
_RAISE = """
local raised = 0
for i, key in ipairs(KEYS) do
  local seen = tonumber(ARGV[i])
  local held = tonumber(redis.call('GET', key))
  if held == nil or held < seen then
    redis.call('SET', key, ARGV[i])
    raised = raised + 1
  end
end
return raised
"""


def head_key(prefix: str, queue: str) -> str:
    return f"{prefix}etl:queue_head:{queue}"


def raise_heads(client: redis.Redis, prefix: str, heads: dict[str, float]) -> int:
    """Raise each queue's head to the given send time, unless it is later already (one round
    trip); how many were raised."""
    if not heads:
        return 0
    queues = sorted(heads)
    return int(
        client.eval(_RAISE, len(queues), *(head_key(prefix, q) for q in queues), *(repr(heads[q]) for q in queues))
    )


def read_head(client: redis.Redis, prefix: str, queue: str) -> float | None:
    """The latest send time of a message a worker has taken from ``queue`` (seconds since the
    epoch); None when none was recorded."""
    raw = client.get(head_key(prefix, queue))
    return None if raw is None else float(raw)


class HeadRecorder:
    """The heads one process has seen, written to Redis at most once per ``interval`` by a daemon
    thread started at the first :meth:`observe`. A failed write keeps what it held, for the next
    one; Redis errors are logged, never raised to the caller."""

    def __init__(self, client: Callable[[], redis.Redis], prefix: str, interval: float = FLUSH_SECONDS) -> None:
        self._client = client
        self.prefix = prefix
        self.interval = interval
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._failing = False

    def observe(self, queue: str, sent_at: float) -> None:
        """A worker took a message sent at ``sent_at`` from ``queue``: no Redis call here."""
        with self._lock:
            if sent_at > self._pending.get(queue, float("-inf")):
                self._pending[queue] = sent_at
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._run, name="etl-queue-heads", daemon=True)
                self._thread.start()

    def flush(self) -> bool:
        """Write what is pending (one round trip, nothing when nothing is); False if Redis failed."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return True
        try:
            raise_heads(self._client(), self.prefix, pending)
        except (redis.RedisError, OSError) as exc:
            with self._lock:  # kept for the next write: a max() loses nothing by waiting
                for queue, sent_at in pending.items():
                    if sent_at > self._pending.get(queue, float("-inf")):
                        self._pending[queue] = sent_at
            if not self._failing:
                log.warning("queue heads not recorded in Redis (next try in %ss): %s", self.interval, exc)
            self._failing = True
            return False
        if self._failing:
            log.info("queue heads recorded in Redis again")
        self._failing = False
        return True

    def close(self) -> None:
        """Stop the thread, after a last write (a worker's thread otherwise ends with its process)."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)
        self.flush()

    def _run(self) -> None:
        while not self._closed.wait(self.interval):
            try:
                self.flush()
            except Exception:  # the thread must outlive any surprise
                log.exception("queue heads: write failed")


def delivered_from(
    delivery_info: dict | None, headers: dict | None, queues: tuple[str, ...]
) -> tuple[str, float] | None:
    """``(queue, sent at)`` of a message delivered to a worker, when it came from one of ``queues``
    and carries its send time, and is delivered for the first time; else None. The queue is the
    message's routing key (each queue is bound to an exchange of its name by a routing key of its
    name); a message back from RabbitMQ's delay queues carries ``<delay bits>.<routing key>`` and
    is counted under its queue too (its send time is older than the head, which it leaves as it
    was). A message delivered again is out of its queue's order and counts for nothing (see the
    module)."""
    if (delivery_info or {}).get("redelivered"):
        return None
    routing_key = (delivery_info or {}).get("routing_key") or ""
    queue = routing_key.rsplit(".", 1)[-1]
    if queue not in queues:
        return None
    try:
        return queue, float((headers or {})[SENT_AT_HEADER])
    except (KeyError, TypeError, ValueError):
        return None
