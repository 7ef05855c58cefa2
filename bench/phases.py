"""Shared phase plumbing (context, polling, waiting) and the phases without the app: raw limit, naive baseline."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench import raw
from bench.noise import ForeignCpu
from bench.procs import BIN, Proc, Processes, wait_worker_ready
from bench.progress import say, step
from bench.rss import Sampler
from etl_app.local.generate import dataset

SEED_RECORD_TYPES = ("tutors", "students")


class Stalled(RuntimeError):
    """Nothing moved for too long: the phase gives up and reports what it saw."""


@dataclass
class Context:
    database_url: str
    redis_url: str
    api_key: str
    procs: Processes
    sampler: Sampler
    seed: int
    stall_seconds: float
    log_dir: Path
    port: int | None = None
    app: dict[str, Proc] | None = None
    submit_key: str = ""  # a key of the ingest role (submit only), for the submitting phases; else api_key
    foreign: ForeignCpu | None = None  # PostgreSQL's and Redis's CPU time (and other programs')


def scalar(database_url: str, sql: str, params: tuple = ()) -> Any:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchone()[0]


class Poller:
    """One open connection, polling a count."""

    def __init__(self, database_url: str, sql: str, params: tuple = ()) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.sql, self.params = sql, params

    def __call__(self) -> int:
        return self.conn.execute(self.sql, self.params).fetchone()[0]

    def close(self) -> None:
        self.conn.close()


TAIL_INTERVAL = 0.05  # seconds between polls once every request is answered


def wait_for(
    ctx: Context,
    remaining: Callable[[], int],
    total: int,
    description: str,
    producer: threading.Thread | None = None,
    interval: float = 0.25,
) -> float:
    """Poll ``remaining()`` until it is 0 and the producer (if any) has finished; returns the
    moment (perf_counter) it was first seen at 0. Raises Stalled when it does not move for
    ``ctx.stall_seconds``. Once the producer has finished, polls every :data:`TAIL_INTERVAL` at
    most: the moment the last record settles is then known within that, not within ``interval``
    (a quarter second is 8 % of a 3-second phase)."""
    last_value, last_change = None, time.monotonic()
    with step(description, total) as progress:
        while True:
            value = remaining()
            now = time.perf_counter()
            progress.update(max(0, total - value))
            producing = producer is not None and producer.is_alive()
            if value <= 0 and not producing:
                return now
            if value != last_value:
                last_value, last_change = value, time.monotonic()
            elif time.monotonic() - last_change > ctx.stall_seconds:
                raise Stalled(f"{description}: {value:,} still outstanding, no progress for {ctx.stall_seconds:.0f}s")
            time.sleep(interval if producing else min(interval, TAIL_INTERVAL))


# -- raw limit --------------------------------------------------------------------------------


def run_raw(ctx: Context, records: int, chunk: int, repeats: int) -> dict[str, Any]:
    """Best of ``repeats`` runs (a limit is a maximum); every run is kept in ``runs``."""
    payloads = list(dataset(records, ctx.seed, id_prefix="bt-").stream("sessions"))
    runs = []
    for i in range(repeats):
        say(
            f"raw limit ({i + 1}/{repeats}): {records:,} sessions, COPY + INSERT … ON CONFLICT, "
            f"{chunk:,} rows a transaction"
        )
        runs.append(raw.raw_limit(ctx.database_url, payloads, chunk=chunk))
    return {
        "records": records,
        "chunk": chunk,
        "insert_rows_per_s": max(r["insert_rows_per_s"] for r in runs),
        "update_rows_per_s": max(r["update_rows_per_s"] for r in runs),
        "runs": runs,
    }


# -- naive baseline ---------------------------------------------------------------------------


def count_prefix(table: str, key: str, prefix: str) -> tuple[str, tuple]:
    return f'SELECT count(*) FROM "{table}" WHERE "{key}" LIKE %s', (prefix + "%",)


def run_naive(ctx: Context, records: int) -> dict[str, Any]:
    from bench import naive_tasks

    naive_tasks.configure(broker_url=ctx.redis_url)
    worker = ctx.procs.start(
        "naive-worker",
        [str(BIN / "celery"), "-A", "bench.naive_tasks", "worker", "-Q", naive_tasks.QUEUE, "-c", "2",
         "--loglevel", "INFO", "--without-mingle", "--without-gossip", "--hostname", "bench-naive@%h"],
        BENCH_DATABASE_URL=ctx.database_url,
        BENCH_REDIS_URL=ctx.redis_url,
    )  # fmt: skip
    try:
        wait_worker_ready(worker)
        ds = dataset(records, ctx.seed, id_prefix="nv-")
        ingestion_id = str(uuid.uuid4())

        def send(record_type: str) -> threading.Thread:
            def publish() -> None:
                for payload in ds.stream(record_type):
                    naive_tasks.record_chain(record_type, payload, ingestion_id).apply_async()

            thread = threading.Thread(target=publish, name=f"naive-{record_type}", daemon=True)
            thread.start()
            return thread

        for record_type in SEED_RECORD_TYPES:  # parents first, untimed
            total = ds.counts[record_type]
            key = "tutor_id" if record_type == "tutors" else "student_id"
            poll = Poller(ctx.database_url, *count_prefix(record_type, key, "nv-"))
            try:
                wait_for(
                    ctx, lambda p=poll, t=total: t - p(), total, f"naive: parents ({record_type})", send(record_type)
                )
            finally:
                poll.close()

        ctx.sampler.track("worker", worker.pid)
        ctx.sampler.reset()
        poll = Poller(ctx.database_url, *count_prefix("sessions", "session_id", "nv-"))
        started = time.perf_counter()
        try:
            done = wait_for(ctx, lambda: records - poll(), records, "naive: sessions persisted", send("sessions"))
        finally:
            poll.close()
        seconds = done - started
        return {
            "records": records,
            "seconds": round(seconds, 3),
            "records_per_s": round(records / seconds, 1),
            "peak_rss_mib": ctx.sampler.snapshot(),
            "cpu_seconds": ctx.sampler.cpu_seconds(),
            "design": "one validate → enrich → persist chain per record, one upsert per transaction",
        }
    finally:
        ctx.sampler.untrack("worker")
        ctx.procs.stop(worker)
