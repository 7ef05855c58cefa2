"""The app's phases: batch path, single-record path, the no-op endpoint and memory soak, over
HTTP to the real app, with a key of the ``ingest`` role (submit only).

A phase counts as done when every record the API accepted is settled: none of the phase's
ingestions has a raw record still ``received``. The no-op phase stores nothing: it is done when
the last request is answered.

Each measured part reports the CPU seconds of the app's processes (by tree: main process and
children), of PostgreSQL and Redis (``servers_cpu_seconds``) and of the load generator's own
threads (``client_cpu_seconds``), from which the report derives µs of CPU per record.
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
# Ingestions not finished yet (a record not settled, or the quality report not stored), with the
# records each accepted: the ingestion row is set ``finished_at`` when its last record settles.
_UNFINISHED = "SELECT id, accepted FROM ingestions WHERE id = ANY(%s) AND finished_at IS NULL"


class Submission:
    """Client threads posting ``bodies`` in the background; knows the ingestions the API
    answered with, and so how many of the submitted records are not settled yet."""

    def __init__(
        self,
        ctx: Context,
        path: str,
        bodies: Iterable[tuple[bytes, int]],
        threads: int,
        records: int,
        new_connections: bool = False,
        idempotency_keys: bool = False,
    ):
        self.ctx, self.path, self.bodies, self.threads, self.records = ctx, path, bodies, threads, records
        self.new_connections = new_connections
        self.idempotency_keys = idempotency_keys
        self.accepted = 0
        self.ingestions: list[uuid.UUID] = []
        self._open: set[uuid.UUID] = set()  # ingestions with records received at the last poll, or new since
        self._polled = 0  # how many of self.ingestions the polls have seen
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
        self.result = run_clients(self.ctx.port, self.ctx.submit_key or self.ctx.api_key, self.path, self.bodies,
                                  self.threads, on_accepted=self._accepted,
                                  new_connections=self.new_connections,
                                  idempotency_keys=self.idempotency_keys)  # fmt: skip

    def _accepted(self, n: int, ingestion_id: str) -> None:
        with self._lock:
            self.accepted += n
            self.ingestions.append(uuid.UUID(ingestion_id))

    def outstanding(self) -> int:
        """Records not answered yet (while submitting) plus the accepted records of the ingestions
        not finished yet (a record still ``received``, or the ingestion's quality report not stored:
        the phase waits for both).

        A poll reads the ingestion rows, not their records: counting the records still ``received``
        cost PostgreSQL 4 to 6 µs per record of the batch phase (each poll visited the index
        entries of the records settled since the previous poll, and their rows), CPU the pipeline
        under test then lacked. A poll asks only for the ingestions open at the previous poll and
        the new ones; when none is left open, one poll over all of them confirms it (a replay may
        reopen a settled ingestion). :meth:`statuses` counts the records once, at the end."""
        submitting = self.thread.is_alive()
        with self._lock:
            unanswered = self.records - self.accepted if submitting else 0
            self._open.update(self.ingestions[self._polled :])
            self._polled = len(self.ingestions)
            everything = list(self.ingestions)
        unfinished = self._unfinished(self._open)
        if not unfinished and everything:
            unfinished = self._unfinished(everything)
        return max(0, unanswered) + unfinished

    def _unfinished(self, ids: Iterable[uuid.UUID]) -> int:
        """The accepted records of these ingestions not finished yet; those stay open."""
        ids = list(ids)
        counts = dict(self._conn.execute(_UNFINISHED, (ids,)).fetchall()) if ids else {}
        self._open = set(counts)
        return sum(counts.values())

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


def _submit_and_wait(
    ctx: Context,
    path: str,
    bodies,
    threads: int,
    records: int,
    description: str,
    new_connections=False,
    idempotency_keys=False,
    **kw,
):
    sub = Submission(ctx, path, bodies, threads, records, new_connections, idempotency_keys).start()
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


def _track_app(ctx: Context) -> float:
    """Track the app's processes from now on (the sampler starts a new phase); returns
    PostgreSQL's and Redis's CPU seconds so far, for :func:`servers_cpu`."""
    assert ctx.app is not None
    for name, proc in ctx.app.items():
        ctx.sampler.track(name, proc.pid)
    ctx.sampler.reset()
    return ctx.foreign.seconds()[1] if ctx.foreign else 0.0


def servers_cpu(ctx: Context, since: float) -> float | None:
    """PostgreSQL's and Redis's CPU seconds since ``since`` (from :func:`_track_app`)."""
    return round(ctx.foreign.seconds()[1] - since, 3) if ctx.foreign else None


def _summary(
    ctx: Context, result: LoadResult, records: int, seconds: float, submit: float, statuses: dict, servers: float
) -> dict:
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
        "servers_cpu_seconds": servers_cpu(ctx, servers),
        "client_cpu_seconds": round(result.client_cpu_seconds, 3),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def run_batch(ctx: Context, records: int, batch_size: int = 1000, clients: int = 2) -> dict[str, Any]:
    ds = dataset(records, ctx.seed, id_prefix="bt-")
    _seed_parents(ctx, ds)
    say(f"batch path: preparing {records:,} sessions in bodies of {batch_size:,}")
    bodies = list(batch_bodies(ds.stream("sessions"), batch_size))
    servers = _track_app(ctx)
    result, seconds, submit, statuses = _submit_and_wait(
        ctx, "/api/v1/sessions/batch", bodies, clients, records, "batch: sessions settled"
    )
    out = _summary(ctx, result, records, seconds, submit, statuses, servers)
    out["persisted_rows"] = scalar(ctx.database_url, *count_prefix("sessions", "session_id", "bt-"))
    out.update(batch_size=batch_size, clients=clients)
    return out


def single_bodies(ctx: Context, records: int) -> tuple[Dataset, list[tuple[bytes, int]]]:
    """The single-record phase's sessions, one JSON object a body (the no-op phase posts the same)."""
    ds = dataset(records, ctx.seed, id_prefix="sg-")
    return ds, [(orjson.dumps(s), 1) for s in ds.stream("sessions")]


def run_single(ctx: Context, records: int, clients: int = 8, idempotency_keys: bool = False) -> dict[str, Any]:
    """One session a request from ``clients`` threads, a new connection for each request
    (``idempotency_keys``: each with an Idempotency-Key of its own)."""
    ds, bodies = single_bodies(ctx, records)
    _seed_parents(ctx, ds)
    servers = _track_app(ctx)
    result, seconds, submit, statuses = _submit_and_wait(
        ctx, "/api/v1/sessions", bodies, clients, records, "single: sessions settled", new_connections=True,
        idempotency_keys=idempotency_keys,
    )  # fmt: skip
    out = _summary(ctx, result, records, seconds, submit, statuses, servers)
    out["persisted_rows"] = scalar(ctx.database_url, *count_prefix("sessions", "session_id", "sg-"))
    out.update(clients=clients, connections="new for each request", idempotency_keys=idempotency_keys)
    return out


NOOP_PATH = "/api/v1/_noop"


def run_noop(ctx: Context, records: int, clients: int = 8) -> dict[str, Any]:
    """The single phase's bodies, its clients and key, posted to the no-op endpoint (the app runs
    with ETL_BENCH_NOOP=1): the web tier's own ceiling, with nothing validated or stored."""
    assert ctx.port is not None
    _, bodies = single_bodies(ctx, records)
    servers = _track_app(ctx)
    say(f"no-op endpoint: {records:,} requests of one session from {clients} clients")
    result = run_clients(ctx.port, ctx.submit_key or ctx.api_key, NOOP_PATH, bodies, clients, new_connections=True)
    seconds = result.finished - result.started
    if result.failed:
        raise RuntimeError(f"no-op endpoint: {result.failed} requests failed: {result.errors}")
    out = _summary(ctx, result, records, seconds, seconds, {}, servers)
    out.update(clients=clients, connections="new for each request")
    return out


def run_soak(ctx: Context, records: int, every: int = 100_000, clients: int = 2) -> dict[str, Any]:
    """``records`` sessions through the batch path, generated on the fly; RSS of every app
    process at the start, at each ``every`` settled records and at the end."""
    ds = dataset(records, ctx.seed, id_prefix="sk-")
    _seed_parents(ctx, ds)
    servers = _track_app(ctx)
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
        "every": every,
        "accepted": result.accepted,
        "failed": result.failed,
        "statuses": statuses,
        "seconds": round(seconds, 1),
        "records_per_s": round(result.accepted / seconds, 1),
        "peak_rss_mib": ctx.sampler.snapshot(),
        "cpu_seconds": ctx.sampler.cpu_seconds(),
        "servers_cpu_seconds": servers_cpu(ctx, servers),
        "client_cpu_seconds": round(result.client_cpu_seconds, 3),
        "snapshots": [{"settled": s["settled"], **_totals(s)} for s in snapshots],
        "rss_by_process": snapshots,
    }


def _totals(snapshot: dict[str, Any]) -> dict[str, float]:
    return {name: round(sum(v.values()), 1) for name, v in snapshot.items() if isinstance(v, dict)}
