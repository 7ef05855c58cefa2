"""The measured phases: raw limit, naive baseline, batch path, single-record path, memory soak."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench import raw
from bench.load import LoadResult, batch_bodies, percentile, run_clients
from bench.procs import BIN, Proc, Processes, wait_worker_ready
from bench.progress import say, step
from bench.rss import Sampler, rss_by_process
from etl_app.generate import dataset

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
    ``ctx.stall_seconds``."""
    last_value, last_change = None, time.monotonic()
    with step(description, total) as progress:
        while True:
            value = remaining()
            now = time.perf_counter()
            progress.update(max(0, total - value))
            producing = producer is not None and producer.is_alive()
            if value <= 0 and not producing:
                return now
            if value != last_value or producing:
                last_value, last_change = value, time.monotonic()
            elif time.monotonic() - last_change > ctx.stall_seconds:
                raise Stalled(f"{description}: {value:,} still outstanding, no progress for {ctx.stall_seconds:.0f}s")
            time.sleep(interval)


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


def _count_prefix(table: str, key: str, prefix: str) -> tuple[str, tuple]:
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
            poll = Poller(ctx.database_url, *_count_prefix(record_type, key, "nv-"))
            try:
                wait_for(
                    ctx, lambda p=poll, t=total: t - p(), total, f"naive: parents ({record_type})", send(record_type)
                )
            finally:
                poll.close()

        ctx.sampler.track("worker", worker.pid)
        ctx.sampler.reset()
        poll = Poller(ctx.database_url, *_count_prefix("sessions", "session_id", "nv-"))
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


# -- the app: batch and single-record paths ---------------------------------------------------

_RECEIVED = "SELECT count(*) FROM raw_records WHERE status = 'received'"
_DEAD = "SELECT count(*) FROM raw_records WHERE status = 'dead'"


def _submit(ctx: Context, path: str, bodies: Iterable[tuple[bytes, int]], threads: int, box: dict) -> threading.Thread:
    def run() -> None:
        box["result"] = run_clients(ctx.port, ctx.api_key, path, bodies, threads, on_accepted=box["accepted"].add)

    thread = threading.Thread(target=run, name=f"submit-{path}", daemon=True)
    thread.start()
    return thread


def outstanding(box: dict, poll: Poller, records: int, producer: threading.Thread) -> Callable[[], int]:
    """Records not settled yet: those not answered yet (while submitting) plus those still received."""

    def count() -> int:
        unanswered = records - box["accepted"].value if producer.is_alive() else 0
        return max(0, unanswered) + poll()

    return count


class Counter:
    """A thread-safe running total."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


def _load_through_api(
    ctx: Context, record_type: str, records: Iterable[dict], total: int, description: str, *, threads: int = 2
) -> LoadResult:
    """Submit in batches of 1,000 and wait until nothing is left ``received``."""
    box: dict[str, Any] = {"accepted": Counter()}
    poll = Poller(ctx.database_url, _RECEIVED)
    try:
        thread = _submit(ctx, f"/api/v1/{record_type}/batch", batch_bodies(records, 1000), threads, box)
        wait_for(ctx, outstanding(box, poll, total, thread), total, description, thread)
    finally:
        poll.close()
    result: LoadResult = box["result"]
    if result.failed:
        raise RuntimeError(f"{description}: {result.failed} records not accepted: {result.errors}")
    return result


def _seed_parents(ctx: Context, ds) -> None:
    for record_type in SEED_RECORD_TYPES:
        total = ds.counts[record_type]
        _load_through_api(ctx, record_type, ds.stream(record_type), total, f"parents ({record_type}, untimed)")


def _track_app(ctx: Context) -> None:
    assert ctx.app is not None
    for name, proc in ctx.app.items():
        ctx.sampler.track(name, proc.pid)


def _timed(
    ctx: Context, path: str, bodies: list[tuple[bytes, int]], records: int, threads: int, label: str
) -> tuple[LoadResult, float, float, int]:
    """Submit the prepared bodies and wait until every record is settled; returns the clients'
    result, the seconds until settled, the seconds the submits took and the new dead letters."""
    dead_before = scalar(ctx.database_url, _DEAD)
    box: dict[str, Any] = {"accepted": Counter()}
    poll = Poller(ctx.database_url, _RECEIVED)
    ctx.sampler.reset()
    try:
        started = time.perf_counter()
        thread = _submit(ctx, path, bodies, threads, box)
        done = wait_for(ctx, outstanding(box, poll, records, thread), records, label, thread)
    finally:
        poll.close()
    result: LoadResult = box["result"]
    return result, done - started, result.finished - started, scalar(ctx.database_url, _DEAD) - dead_before


def _summary(result: LoadResult, records: int, timing: tuple[float, float, int], sampler: Sampler) -> dict:
    seconds, submit_seconds, dead = timing
    return {
        "records": records,
        "accepted": result.accepted,
        "rejected": result.rejected,
        "failed": result.failed,
        "dead": dead,
        "requests": result.requests,
        "seconds": round(seconds, 3),
        "records_per_s": round(result.accepted / seconds, 1) if seconds else None,
        "submit_seconds": round(submit_seconds, 3),
        "api_records_per_s": round(result.accepted / submit_seconds, 1) if submit_seconds else None,
        "latency_ms": {
            "p50": _round(percentile(result.latencies_ms, 50)),
            "p99": _round(percentile(result.latencies_ms, 99)),
            "max": _round(max(result.latencies_ms, default=None)),
        },
        "errors": result.errors[:5],
        "peak_rss_mib": sampler.snapshot(),
        "cpu_seconds": sampler.cpu_seconds(),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def run_batch(ctx: Context, records: int, batch_size: int = 1000, clients: int = 2) -> dict[str, Any]:
    ds = dataset(records, ctx.seed, id_prefix="bt-")
    _seed_parents(ctx, ds)
    say(f"batch path: preparing {records:,} sessions in bodies of {batch_size:,}")
    bodies = list(batch_bodies(ds.stream("sessions"), batch_size))
    _track_app(ctx)
    result, *timing = _timed(ctx, "/api/v1/sessions/batch", bodies, records, clients, "batch: sessions settled")
    out = _summary(result, records, tuple(timing), ctx.sampler)
    out["persisted_rows"] = scalar(ctx.database_url, *_count_prefix("sessions", "session_id", "bt-"))
    out.update(batch_size=batch_size, clients=clients)
    return out


def run_single(ctx: Context, records: int, clients: int = 8) -> dict[str, Any]:
    ds = dataset(records, ctx.seed, id_prefix="sg-")
    _seed_parents(ctx, ds)
    bodies = [(orjson.dumps(s), 1) for s in ds.stream("sessions")]
    _track_app(ctx)
    result, *timing = _timed(ctx, "/api/v1/sessions", bodies, records, clients, "single: sessions settled")
    out = _summary(result, records, tuple(timing), ctx.sampler)
    out["persisted_rows"] = scalar(ctx.database_url, *_count_prefix("sessions", "session_id", "sg-"))
    out["clients"] = clients
    return out


def run_soak(ctx: Context, records: int, every: int = 100_000, clients: int = 2) -> dict[str, Any]:
    """``records`` sessions through the batch path, generated on the fly; RSS of every app
    process at each ``every`` settled records and at the end."""
    ds = dataset(records, ctx.seed, id_prefix="sk-")
    _seed_parents(ctx, ds)
    _track_app(ctx)
    assert ctx.app is not None
    snapshots: list[dict[str, Any]] = []

    def snap(settled: int) -> None:
        snapshots.append({"settled": settled, **{name: rss_by_process(proc.pid) for name, proc in ctx.app.items()}})

    box: dict[str, Any] = {"accepted": Counter()}
    poll = Poller(ctx.database_url, _RECEIVED)
    ctx.sampler.reset()
    snap(0)
    next_mark = every

    def remaining() -> int:
        nonlocal next_mark
        left = max(0, records - box["accepted"].value) + poll()
        settled = records - left
        while settled >= next_mark and next_mark < records:
            snap(next_mark)
            next_mark += every
        return left

    try:
        started = time.perf_counter()
        thread = _submit(ctx, "/api/v1/sessions/batch", batch_bodies(ds.stream("sessions"), 1000), clients, box)
        done = wait_for(ctx, remaining, records, "soak: sessions settled", thread, interval=0.5)
    finally:
        poll.close()
    snap(records)
    result: LoadResult = box["result"]
    return {
        "records": records,
        "accepted": result.accepted,
        "failed": result.failed,
        "seconds": round(done - started, 1),
        "records_per_s": round(result.accepted / (done - started), 1),
        "peak_rss_mib": ctx.sampler.snapshot(),
        "cpu_seconds": ctx.sampler.cpu_seconds(),
        "snapshots": [{"settled": s["settled"], **_totals(s)} for s in snapshots],
        "rss_by_process": snapshots,
    }


def _totals(snapshot: dict[str, Any]) -> dict[str, float]:
    return {name: round(sum(v.values()), 1) for name, v in snapshot.items() if isinstance(v, dict)}
