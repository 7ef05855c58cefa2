"""The app's phases: batch path, single-record path and memory soak, over HTTP to the real app.

A phase counts as done when every record the API accepted is settled: none of the phase's
ingestions has a raw record still ``received``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
import psycopg

from bench.load import LoadResult, batch_bodies, percentile, run_clients
from bench.phases import SEED_RECORD_TYPES, Context, count_prefix, scalar, wait_for
from bench.progress import say
from bench.rss import rss_by_process
from etl_app.local.generate import Dataset, dataset

_STATUS = (
    "SELECT count(*) FILTER (WHERE status = 'received'), count(*) FILTER (WHERE status = 'persisted'), "
    "count(*) FILTER (WHERE status = 'dead') FROM raw_records WHERE ingestion_id = ANY(%s)"
)
_RECEIVED = "SELECT count(*) FROM raw_records WHERE ingestion_id = ANY(%s) AND status = 'received'"


class Submission:
    """Client threads posting ``bodies`` in the background; knows the ingestions the API
    answered with, and so how many of the submitted records are not settled yet."""

    def __init__(self, ctx: Context, path: str, bodies: Iterable[tuple[bytes, int]], threads: int, records: int):
        self.ctx, self.path, self.bodies, self.threads, self.records = ctx, path, bodies, threads, records
        self.accepted = 0
        self.ingestions: list[uuid.UUID] = []
        self.result: LoadResult | None = None
        self.started = 0.0
        self._lock = threading.Lock()
        self._conn = psycopg.connect(ctx.database_url, autocommit=True)
        self.thread = threading.Thread(target=self._run, name=f"submit {path}", daemon=True)

    def start(self) -> Submission:
        self.started = time.perf_counter()
        self.thread.start()
        return self

    def _run(self) -> None:
        assert self.ctx.port is not None
        self.result = run_clients(self.ctx.port, self.ctx.api_key, self.path, self.bodies, self.threads,
                                  on_accepted=self._accepted)  # fmt: skip

    def _accepted(self, n: int, ingestion_id: str) -> None:
        with self._lock:
            self.accepted += n
            self.ingestions.append(uuid.UUID(ingestion_id))

    def outstanding(self) -> int:
        """Records not answered yet (while submitting) plus accepted ones still ``received``."""
        submitting = self.thread.is_alive()
        with self._lock:
            unanswered = self.records - self.accepted if submitting else 0
            ids = list(self.ingestions)
        received = self._conn.execute(_RECEIVED, (ids,)).fetchone()[0] if ids else 0
        return max(0, unanswered) + received

    def statuses(self) -> dict[str, int]:
        row = self._conn.execute(_STATUS, (list(self.ingestions),)).fetchone()
        return dict(zip(("received", "persisted", "dead"), row, strict=True))

    def wait(self, description: str, interval: float = 0.25, on_poll=None) -> float:
        """Wait until all is settled; returns the seconds since the first submit."""

        def remaining() -> int:
            left = self.outstanding()
            if on_poll:
                on_poll(self.records - left)
            return left

        done = wait_for(self.ctx, remaining, self.records, description, self.thread, interval)
        return done - self.started

    def close(self) -> None:
        self._conn.close()


def _submit_and_wait(ctx: Context, path: str, bodies, threads: int, records: int, description: str, **kw):
    sub = Submission(ctx, path, bodies, threads, records).start()
    try:
        seconds = sub.wait(description, **kw)
        statuses = sub.statuses()
    finally:
        sub.close()
    assert sub.result is not None
    return sub.result, seconds, sub.result.finished - sub.started, statuses


def _seed_parents(ctx: Context, ds: Dataset) -> None:
    """The phase's tutors and students, in batches of 1,000, untimed."""
    for record_type in SEED_RECORD_TYPES:
        total = ds.counts[record_type]
        bodies = batch_bodies(ds.stream(record_type), 1000)
        result, _, _, statuses = _submit_and_wait(
            ctx, f"/api/v1/{record_type}/batch", bodies, 2, total, f"parents ({record_type}, untimed)"
        )
        if result.failed or statuses["persisted"] != total:
            raise RuntimeError(f"parents ({record_type}): {statuses}, {result.failed} not accepted {result.errors}")


def _track_app(ctx: Context) -> None:
    assert ctx.app is not None
    for name, proc in ctx.app.items():
        ctx.sampler.track(name, proc.pid)
    ctx.sampler.reset()


def _summary(ctx: Context, result: LoadResult, records: int, seconds: float, submit: float, statuses: dict) -> dict:
    return {
        "records": records,
        "accepted": result.accepted,
        "rejected": result.rejected,
        "failed": result.failed,
        "statuses": statuses,
        "requests": result.requests,
        "seconds": round(seconds, 3),
        "records_per_s": round(result.accepted / seconds, 1) if seconds else None,
        "submit_seconds": round(submit, 3),
        "api_records_per_s": round(result.accepted / submit, 1) if submit else None,
        "latency_ms": {
            "p50": _round(percentile(result.latencies_ms, 50)),
            "p99": _round(percentile(result.latencies_ms, 99)),
            "max": _round(max(result.latencies_ms, default=None)),
        },
        "errors": result.errors[:5],
        "peak_rss_mib": ctx.sampler.snapshot(),
        "cpu_seconds": ctx.sampler.cpu_seconds(),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def run_batch(ctx: Context, records: int, batch_size: int = 1000, clients: int = 2) -> dict[str, Any]:
    ds = dataset(records, ctx.seed, id_prefix="bt-")
    _seed_parents(ctx, ds)
    say(f"batch path: preparing {records:,} sessions in bodies of {batch_size:,}")
    bodies = list(batch_bodies(ds.stream("sessions"), batch_size))
    _track_app(ctx)
    result, seconds, submit, statuses = _submit_and_wait(
        ctx, "/api/v1/sessions/batch", bodies, clients, records, "batch: sessions settled"
    )
    out = _summary(ctx, result, records, seconds, submit, statuses)
    out["persisted_rows"] = scalar(ctx.database_url, *count_prefix("sessions", "session_id", "bt-"))
    out.update(batch_size=batch_size, clients=clients)
    return out


def run_single(ctx: Context, records: int, clients: int = 8) -> dict[str, Any]:
    ds = dataset(records, ctx.seed, id_prefix="sg-")
    _seed_parents(ctx, ds)
    bodies = [(orjson.dumps(s), 1) for s in ds.stream("sessions")]
    _track_app(ctx)
    result, seconds, submit, statuses = _submit_and_wait(
        ctx, "/api/v1/sessions", bodies, clients, records, "single: sessions settled"
    )
    out = _summary(ctx, result, records, seconds, submit, statuses)
    out["persisted_rows"] = scalar(ctx.database_url, *count_prefix("sessions", "session_id", "sg-"))
    out["clients"] = clients
    return out


def run_soak(ctx: Context, records: int, every: int = 100_000, clients: int = 2) -> dict[str, Any]:
    """``records`` sessions through the batch path, generated on the fly; RSS of every app
    process at the start, at each ``every`` settled records and at the end."""
    ds = dataset(records, ctx.seed, id_prefix="sk-")
    _seed_parents(ctx, ds)
    _track_app(ctx)
    app = ctx.app
    assert app is not None
    snapshots: list[dict[str, Any]] = []

    def snap(settled: int) -> None:
        snapshots.append({"settled": settled, **{name: rss_by_process(proc.pid) for name, proc in app.items()}})

    marks = iter(range(every, records, every))
    next_mark = [next(marks, None)]

    def on_poll(settled: int) -> None:
        while next_mark[0] is not None and settled >= next_mark[0]:
            snap(next_mark[0])
            next_mark[0] = next(marks, None)

    snap(0)
    bodies = batch_bodies(ds.stream("sessions"), 1000)
    result, seconds, _, statuses = _submit_and_wait(
        ctx, "/api/v1/sessions/batch", bodies, clients, records, "soak: sessions settled", interval=0.5,
        on_poll=on_poll,
    )  # fmt: skip
    snap(records)
    return {
        "records": records,
        "accepted": result.accepted,
        "failed": result.failed,
        "statuses": statuses,
        "seconds": round(seconds, 1),
        "records_per_s": round(result.accepted / seconds, 1),
        "peak_rss_mib": ctx.sampler.snapshot(),
        "cpu_seconds": ctx.sampler.cpu_seconds(),
        "snapshots": [{"settled": s["settled"], **_totals(s)} for s in snapshots],
        "rss_by_process": snapshots,
    }


def _totals(snapshot: dict[str, Any]) -> dict[str, float]:
    return {name: round(sum(v.values()), 1) for name, v in snapshot.items() if isinstance(v, dict)}
