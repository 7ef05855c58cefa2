"""Chains lost while a sustained load keeps the queue long: the sweeper re-drives exactly the
lost records, and they land while the load goes on (it does not wait for the queue to drain).

On Redis the sweeper reads when the oldest queued message was sent from the queue itself; on
RabbitMQ from the queue's head as the workers record it (etl_app.pipeline.queue_head)."""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kombu import Connection, Exchange, Producer, Queue

from tests.helpers.faultlib import Clock, assert_exactly_once, report, swept, wait_settled
from tests.helpers.payloads import student, tutor
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.slow

CHUNK = 50
LEASE = 3  # seconds; the queue below waits several leases
DEPTH = 400  # messages the load keeps queued, at least (the sweeper used to wait above 200)
# ... and more while the oldest has waited less than this: a worker that drains 600 messages in
# a few seconds would otherwise never let the queue wait several leases (up to MAX_DEPTH)
OLDEST = 2 * LEASE + 1
MAX_DEPTH = 6_000
LOAD_BATCH = 1_000
VICTIMS = 200  # tutors: 4 chains, taken out of the queue


def chunk_type(body) -> str | None:
    """The record type of a pipeline task's body (``[args, kwargs, embed]``); None for any other."""
    args = body[0] if isinstance(body, list) else []
    first = args[0] if args else None
    return first.get("type") if isinstance(first, dict) else None


def message_type(raw: bytes) -> str | None:
    """The record type of a pipeline message in the Redis broker's list (None for any other message)."""
    return chunk_type(json.loads(base64.b64decode(json.loads(raw)["body"])))


class Load(threading.Thread):
    """Keeps at least DEPTH messages queued by submitting student batches, and more until the
    oldest has waited OLDEST seconds, however fast the worker drains them; samples the queue."""

    def __init__(self, api, broker, env: dict[str, str], cache, unique: str) -> None:
        super().__init__(name="load", daemon=True)
        self.api, self.broker, self.env, self.cache, self.unique = api, broker, env, cache, unique
        self.ingestions: list[str] = []
        self.accepted = 0
        self.samples: list[tuple[float, int, float]] = []  # (time, depth, oldest message's wait)
        self.halt = threading.Event()
        self.gate = threading.Lock()  # held by each round, and by :meth:`paused`
        self.error: BaseException | None = None

    def depth(self) -> int:
        return self.broker.queue_length(self.env)

    def wait(self) -> float:
        return self.broker.queue_wait(self.env, self.cache)

    def run(self) -> None:
        try:
            n = 0
            while not self.halt.is_set():
                with self.gate:
                    depth, oldest = self.depth(), self.wait()
                    self.samples.append((time.monotonic(), depth, oldest))
                    if depth < DEPTH + 200 or (oldest < OLDEST and depth < MAX_DEPTH):
                        batch = [student(f"{self.unique}-L{n}-{i}", grade_level=1 + i % 16) for i in range(LOAD_BATCH)]
                        body = self.api.submit("students/batch", batch)
                        self.ingestions.append(body["ingestion_id"])
                        self.accepted += body["accepted"]
                        n += 1
                        continue
                self.halt.wait(0.2)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Nothing submitted, nothing sampled meanwhile."""
        with self.gate:
            yield

    def stop(self) -> None:
        self.halt.set()
        self.join(60)
        assert self.error is None, f"the load failed: {self.error!r}"


def take_out_of_redis(client, prefix: str, record_type: str, expected: int) -> int:
    """Remove every queued message of this record type from the broker's list, as a lost
    message; returns how many. Waits until ``expected`` of them are there."""
    key = f"{prefix}etl"

    def theirs() -> list[bytes] | None:
        found = [raw for raw in client.lrange(key, 0, -1) if message_type(raw) == record_type]
        return found if len(found) >= expected else None

    removed = 0
    for raw in wait_until(theirs, 30, 0.05, what=f"{expected} {record_type} messages queued"):
        removed += client.lrem(key, 1, raw)
    return removed


def take_out_of_rabbitmq(url: str, record_type: str) -> int:
    """Remove every queued message of this record type from the vhost's ``etl`` queue, as a lost
    message; returns how many. AMQP removes no message from the middle of a queue: every ready
    message is taken (``basic.get`` with automatic acknowledgement), and the others are published
    again at the end of the queue in the order they came (body, headers and properties as they
    were, publisher confirms). Nothing else may enter the queue meanwhile (the caller pauses the
    load and the worker): it is then as it was, less the victims.

    Not taken unacknowledged then acknowledged: on RabbitMQ 3.10, acks of many ``basic.get``
    messages followed at once by the channel's close were mostly lost (967 of 1,000), and the
    quorum queue gave those messages back, redelivered and shuffled, ahead of the ones published
    again; nor given back (``basic.reject`` with requeue), which puts them out of their order too.
    Either way the workers would take recent messages before older ones, which a queue never does."""
    with Connection(url, connect_timeout=10, transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        queue = Queue("etl", channel=channel)
        taken = []
        while (message := queue.get(no_ack=True)) is not None:
            taken.append(message)
        producer = Producer(channel, exchange=Exchange("etl", type="topic"), routing_key="etl", auto_declare=False)
        kept = [message for message in taken if chunk_type(message.payload) != record_type]
        for message in kept:
            producer.publish(
                message.body,
                headers=message.headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode=2,
                **{k: v for k, v in message.properties.items() if k in ("correlation_id", "reply_to", "priority")},
            )
        channel.close()
    return len(taken) - len(kept)


@contextmanager
def stopped(proc) -> Iterator[None]:
    """The process and its children stopped (SIGSTOP), then continued: a worker that takes
    nothing meanwhile (its consumer, its pool, the beat jobs it runs)."""
    proc.signal_group(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.signal_group(signal.SIGCONT)


def test_chains_lost_under_a_sustained_load_land_while_the_queue_stays_long(
    make_stack, broker, fault_engine, registry, unique
):
    stack = make_stack(ETL_CHUNK_SIZE=str(CHUNK), ETL_OUTBOX_LEASE_SECONDS=str(LEASE), ETL_SWEEP_INTERVAL_SECONDS="1")
    api = stack.up(concurrency=1)
    worker = stack.procs[0]
    client = stack.redis.client()
    load = Load(api, broker, stack.broker_env, client, unique)
    load.start()
    try:
        # a queue that waits several leases: a lease-only sweeper would re-send what is queued
        wait_until(
            lambda: load.depth() >= DEPTH and load.wait() > 2 * LEASE,
            120,
            0.2,
            what=f"{DEPTH} messages queued, the oldest waiting > {2 * LEASE}s",
        )
        clock = Clock()
        victims = api.submit("tutors/batch", [tutor(f"{unique}-T{i}") for i in range(VICTIMS)])
        if broker.name == "redis":
            removed = take_out_of_redis(client, stack.prefix, "tutors", VICTIMS // CHUNK)
        else:
            with load.paused(), stopped(worker):
                removed = take_out_of_rabbitmq(stack.broker_env["CELERY_BROKER_URL"], "tutors")
        assert removed == VICTIMS // CHUNK
        lost_at = clock()

        wait_settled(fault_engine, [victims["ingestion_id"]], 240, what="of the lost chains")
        landed = clock() - lost_at
        during = [s for s in load.samples if s[0] >= clock.t0]
    finally:
        load.stop()
    assert during and min(depth for _, depth, _ in during) >= DEPTH // 2, (
        "the queue did not stay long while the lost records were re-driven"
    )
    longest_wait = max(wait for _, _, wait in during)

    ingestions = [victims["ingestion_id"], *load.ingestions]
    wait_settled(fault_engine, ingestions, 300, what="after the load")
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=("name",))
    assert (o.persisted, o.dead) == (VICTIMS + load.accepted, 0)
    resent = swept(worker)
    assert VICTIMS <= resent < VICTIMS + 2 * CHUNK, f"the sweeper re-sent {resent} records for {VICTIMS} lost"
    report(
        "chains lost under sustained load",
        o,
        clock(),
        lost=VICTIMS,
        swept=resent,
        lost_landed_after_s=round(landed, 1),
        queue_wait_max_s=round(longest_wait, 1),
        queue_depth_min=min(depth for _, depth, _ in during),
        lease_s=LEASE,
    )
