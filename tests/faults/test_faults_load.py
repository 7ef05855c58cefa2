"""Chains lost while a sustained load keeps the queue long: the sweeper re-drives exactly the
lost records, and they land while the load goes on (it does not wait for the queue to drain)."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest

from tests.helpers.faultlib import Clock, assert_exactly_once, report, swept, wait_settled
from tests.helpers.payloads import student, tutor
from tests.helpers.procs import wait_until
from tests.helpers.support import queue_length

pytestmark = pytest.mark.slow

CHUNK = 50
LEASE = 3  # seconds; the queue below waits several leases
DEPTH = 400  # messages the load keeps queued, at least (the sweeper used to wait above 200)
LOAD_BATCH = 1_000
VICTIMS = 200  # tutors: 4 chains, taken out of the queue


def message_type(raw: bytes) -> str | None:
    """The record type of a pipeline message in the broker's list (None for any other message)."""
    body = json.loads(base64.b64decode(json.loads(raw)["body"]))
    args = body[0] if isinstance(body, list) else []
    first = args[0] if args else None
    return first.get("type") if isinstance(first, dict) else None


def queue_wait(client, prefix: str) -> float:
    """How long the oldest message still queued has waited (0 when the queue is empty)."""
    raw = client.lindex(f"{prefix}etl", -1)
    return 0.0 if raw is None else time.time() - float(json.loads(raw)["headers"]["etl_sent_at"])


class Load(threading.Thread):
    """Keeps at least DEPTH messages queued by submitting student batches; samples the queue."""

    def __init__(self, api, client, redis_url: str, prefix: str, unique: str) -> None:
        super().__init__(name="load", daemon=True)
        self.api, self.client, self.redis_url, self.prefix, self.unique = api, client, redis_url, prefix, unique
        self.ingestions: list[str] = []
        self.accepted = 0
        self.samples: list[tuple[float, int, float]] = []  # (time, depth, oldest message's wait)
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n = 0
            while not self.halt.is_set():
                depth = queue_length(self.redis_url, self.prefix)
                self.samples.append((time.monotonic(), depth, queue_wait(self.client, self.prefix)))
                if depth < DEPTH + 200:
                    batch = [student(f"{self.unique}-L{n}-{i}", grade_level=1 + i % 16) for i in range(LOAD_BATCH)]
                    body = self.api.submit("students/batch", batch)
                    self.ingestions.append(body["ingestion_id"])
                    self.accepted += body["accepted"]
                    n += 1
                else:
                    self.halt.wait(0.2)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(60)
        assert self.error is None, f"the load failed: {self.error!r}"


def take_out(client, prefix: str, record_type: str, expected: int) -> int:
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


def test_chains_lost_under_a_sustained_load_land_while_the_queue_stays_long(
    make_stack, broker, fault_engine, registry, unique
):
    if broker.name != "redis":
        pytest.skip(
            "RabbitMQ: the sweeper cannot see when the oldest queued message was sent (AMQP has no "
            "peek), so under a queue longer than the lease it re-sends queued records too; and "
            "a message cannot be taken out of a queue without consuming it"
        )
    stack = make_stack(ETL_CHUNK_SIZE=str(CHUNK), ETL_OUTBOX_LEASE_SECONDS=str(LEASE), ETL_SWEEP_INTERVAL_SECONDS="1")
    api = stack.up(concurrency=1)
    redis_url = stack.redis.url(0)
    worker = stack.procs[0]
    client = stack.redis.client()
    load = Load(api, client, redis_url, stack.prefix, unique)
    load.start()
    try:
        # a queue that waits several leases: a lease-only sweeper would re-send what is queued
        wait_until(
            lambda: queue_length(redis_url, stack.prefix) >= DEPTH and queue_wait(client, stack.prefix) > 2 * LEASE,
            120,
            0.2,
            what=f"{DEPTH} messages queued, the oldest waiting > {2 * LEASE}s",
        )
        clock = Clock()
        victims = api.submit("tutors/batch", [tutor(f"{unique}-T{i}") for i in range(VICTIMS)])
        removed = take_out(client, stack.prefix, "tutors", VICTIMS // CHUNK)
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
