"""The hostile-files phase (opt-in: ``python -m bench --only hostile``).

Each case writes one hostile file (:mod:`bench.hostile_files`), starts the app afresh on a
private database (``etl_app_bench_hostile``, re-created for every case) and the bench's Redis
(flushed), sends the file to ``POST /api/v1/{type}/upload`` and follows
``GET /api/v1/ingestions/{id}`` until the ingestion settles, fails or the upload is refused, or
until the case's time cap. It reports the HTTP answer, the peak resident memory of the web and
worker process trees (sampled every 0.2 s), the bytes the database grew by (each table's
``pg_total_relation_size`` and the whole database), the rows produced, and the seconds taken.

Only the public HTTP API and the tables are used, so the phase runs unchanged against any
version of the upload readers. It protects the machine rather than the service: a case stops
(its processes killed) when the database grew by more than ``STORED_CAP`` bytes, when the
disk's free space or the machine's available memory run low, or when the app's processes hold
more than ``RSS_CAP_MIB``; every process is killed at the end of its case and the database is
dropped at the end of the phase.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from bench import env
from bench import hostile_files as files
from bench.phases import Context
from bench.procs import Proc, Processes, start_app
from bench.progress import say
from bench.rss import Sampler

CAP_SECONDS = 180.0
STORED_CAP = 5 * 10**9  # bytes the database may grow by in one case
MIN_FREE_DISK = 10 * 2**30  # a case does not start (and stops) with less free disk than this
MIN_AVAILABLE_MEMORY = 4 * 2**30  # the machine's available memory below which a case stops
RSS_CAP_MIB = 8 * 1024  # the app's processes together
HOSTILE_DB = env.BENCH_DB + "_hostile"


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    record_type: str
    filename: str
    content_type: str
    write: Callable[[Path, float], str]  # (path, scale) → description
    note: str = ""


def _sized(n: int, scale: float) -> int:
    return max(1, int(n * scale))


CASES = (
    Case("parquet-dict-value", "parquet: one 1 MB dictionary value on every row", "students",
         "students.parquet", "application/vnd.apache.parquet",
         lambda p, s: files.parquet_shared_value(p, rows=_sized(100_000, s))),
    Case("xlsx-shared-value", "xlsx: one 1 MB shared string in every row", "students",
         "students.xlsx", files.XLSX_TYPE + ".sheet",
         lambda p, s: files.xlsx_shared_string(p, rows=_sized(12_000, s))),
    Case("xlsx-many-strings", "xlsx: 3.8 M short shared strings, 10 rows", "students",
         "students.xlsx", files.XLSX_TYPE + ".sheet",
         lambda p, s: files.xlsx_many_strings(p, strings=_sized(3_800_000, s))),
    Case("parquet-5m-rows", "parquet: 5,000,000 run-length encoded rows", "students",
         "students.parquet", "application/vnd.apache.parquet",
         lambda p, s: files.parquet_many_rows(p, rows=_sized(5_000_000, s))),
    Case("json-150mb-string", "json: one 150 MB string value", "students",
         "students.json", "application/json",
         lambda p, s: files.json_huge_string(p, value_bytes=_sized(150 * 10**6, s))),
    Case("xlsx-300k-students", "xlsx: 300,000 valid students (slice resume cost)", "students",
         "students.xlsx", files.XLSX_TYPE + ".sheet",
         lambda p, s: files.xlsx_students(p, rows=_sized(300_000, s)),
         note="rows/s read early vs late, from the upload's rows_read"),
    Case("csv-repeated-value", "csv (control): a 1 MB value on every row", "students",
         "students.csv", "text/csv",
         lambda p, s: files.csv_repeated_value(p, rows=_sized(64, s))),
    Case("ndjson-repeated-value", "ndjson (control): a 1 MB value on every line", "students",
         "students.ndjson", "application/x-ndjson",
         lambda p, s: files.ndjson_repeated_value(p, rows=_sized(64, s))),
)  # fmt: skip
CASE_NAMES = tuple(case.name for case in CASES)
_TABLE_SIZES = (
    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
)


def _table_sizes(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute(_TABLE_SIZES).fetchall())


def _count(conn: psycopg.Connection, table: str) -> int | None:
    exists = conn.execute("SELECT to_regclass(%s)", (f'public."{table}"',)).fetchone()[0]
    return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] if exists else None


def _free_disk(conn: psycopg.Connection) -> int:
    """Free bytes on the database's disk (its data directory when this machine can see it)."""
    try:
        place = conn.execute("SHOW data_directory").fetchone()[0]
        return shutil.disk_usage(place).free
    except (psycopg.Error, OSError):
        return shutil.disk_usage(tempfile.gettempdir()).free


def _rates(progress: list[tuple[float, int]]) -> dict[str, float] | None:
    """Rows read per second over the first and the last quarter of the rows read."""
    if not progress or progress[-1][1] < 4:
        return None
    final = progress[-1][1]
    ended = next(t for t, rows in progress if rows == final)

    def at(share: float) -> tuple[float, int]:
        return next((t, rows) for t, rows in progress if rows >= share * final)

    (t1, r1), (t3, r3) = at(0.25), at(0.75)
    return {
        "first_quarter_rows_per_s": round(r1 / max(t1, 0.1), 1),
        "last_quarter_rows_per_s": round((final - r3) / max(ended - t3, 0.1), 1),
        "read_seconds": round(ended, 1),
    }


class _Post(threading.Thread):
    """The upload, sent streaming from disk in a thread so that the guards keep watching."""

    def __init__(self, url: str, headers: dict[str, str], case: Case, path: Path, timeout: float) -> None:
        super().__init__(name=f"upload {case.name}", daemon=True)
        self.url, self.headers, self.case, self.path, self.timeout = url, headers, case, path, timeout
        self.status: int | None = None
        self.body: dict[str, Any] | str | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            with self.path.open("rb") as f, httpx.Client(timeout=self.timeout) as client:
                r = client.post(
                    self.url, headers=self.headers, files={"file": (self.case.filename, f, self.case.content_type)}
                )
            self.status = r.status_code
            try:
                self.body = r.json()
            except ValueError:
                self.body = r.text[:500]
        except Exception as exc:  # noqa: BLE001 - reported as the case's HTTP answer
            self.error = f"{type(exc).__name__}: {exc}"[:300]


class _Stack:
    """The app (its Procfile's processes) on the case's fresh database, and its RSS sampler."""

    def __init__(self, ctx: Context, database_url: str, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs = Processes(log_dir, {**ctx.procs.env, "DATABASE_URL": database_url})
        self.sampler = Sampler().start()
        self.app: dict[str, Proc] = {}
        self.port = 0

    def start(self) -> None:
        self.app, self.port = start_app(self.procs)
        for name, proc in self.app.items():
            self.sampler.track(name, proc.pid)
        self.sampler.reset()

    def stop(self) -> None:
        self.sampler.sample()
        self.procs.stop_all(timeout=5)
        self.sampler.stop()


def run_hostile(ctx: Context, cap: float = CAP_SECONDS, only: list[str] | None = None, scale: float = 1.0) -> dict:
    if ctx.app:  # an earlier phase's app holds the bench database: the next phase that needs it starts it again
        for proc in ctx.app.values():
            ctx.procs.stop(proc)
        ctx.app, ctx.port = None, None
    database_url = env.database_url(ctx.database_url, HOSTILE_DB)
    cases = [case for case in CASES if not only or case.name in only]
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
            for case in cases:
                try:
                    results.append(_run_case(ctx, case, Path(tmp), database_url, cap, scale))
                except Exception as exc:  # noqa: BLE001 - reported; the next case still runs
                    say(f"[red]hostile {case.name} failed: {type(exc).__name__}: {exc}[/red]")
                    results.append({"case": case.name, "title": case.title, "error": f"{type(exc).__name__}: {exc}"})
                finally:
                    (Path(tmp) / case.filename).unlink(missing_ok=True)
    finally:
        env.drop_database(database_url)
        env.flush_redis(ctx.redis_url)
    return {"cap_seconds": cap, "scale": scale, "database": HOSTILE_DB, "cases": results}


def _run_case(ctx: Context, case: Case, tmp: Path, database_url: str, cap: float, scale: float) -> dict[str, Any]:
    path = tmp / case.filename
    say(f"hostile {case.name}: writing the file (untimed)")
    description = case.write(path, scale)
    size = path.stat().st_size
    out: dict[str, Any] = {"case": case.name, "title": case.title, "file": description, "file_bytes": size}
    if case.note:
        out["note"] = case.note
    env.recreate_database(database_url)
    env.flush_redis(ctx.redis_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        free = _free_disk(conn)
        if free < MIN_FREE_DISK:
            out["outcome"] = f"skipped: {free / 2**30:.1f} GiB free on the database's disk"
            return out
        stack = _Stack(ctx, database_url, ctx.log_dir / f"hostile-{case.name}")
        try:
            stack.start()
            before = _table_sizes(conn)
            db_before = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            say(f"hostile {case.name}: sending {size:,} bytes ({description})")
            out.update(_follow(ctx, case, path, stack, conn, db_before, cap))
        finally:
            stack.stop()
        after = _table_sizes(conn)
        grown = {t: after[t] - before.get(t, 0) for t in after if after[t] - before.get(t, 0) > 0}
        out["stored_bytes"] = {
            "database": conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] - db_before,
            "tables": dict(sorted(grown.items(), key=lambda kv: -kv[1])),
        }
        out["rows"] = {
            "records": _count(conn, case.record_type),
            "rejections": _count(conn, "rejections"),
            "raw_records": _count(conn, "raw_records"),
        }
    peaks, largest = stack.sampler.snapshot(), stack.sampler.largest()
    out["rss_mib"] = {name: {"tree_peak": peaks.get(name), "largest_process": largest.get(name)} for name in stack.app}
    out["cpu_seconds"] = stack.sampler.cpu_seconds()
    say(f"hostile {case.name}: {out['outcome']} in {out['seconds']:.0f} s")
    return out


def _follow(
    ctx: Context, case: Case, path: Path, stack: _Stack, conn: psycopg.Connection, db_before: int, cap: float
) -> dict[str, Any]:
    """Send the file and follow its ingestion until it settles or a guard stops the case."""
    base = f"http://127.0.0.1:{stack.port}/api/v1"
    headers = {"Authorization": f"Bearer {ctx.api_key}"}
    post = _Post(f"{base}/{case.record_type}/upload", headers, case, path, timeout=cap)
    started = time.perf_counter()
    post.start()
    body: dict[str, Any] = {}
    progress: list[tuple[float, int]] = []
    outcome, last_say, last_size = None, 0.0, 0.0
    with httpx.Client(timeout=30, headers=headers) as client:
        while outcome is None:
            elapsed = time.perf_counter() - started
            outcome = _guard(stack, conn, db_before, elapsed, cap, last_size)
            if elapsed - last_size >= 2:
                last_size = elapsed
            if outcome or post.is_alive():
                time.sleep(0.5)
                continue
            if post.status != 202 or not isinstance(post.body, dict):
                code = post.body.get("error") if isinstance(post.body, dict) else None
                outcome = post.error or f"refused: {post.status} {code}"
                break
            try:
                r = client.get(f"{base}/ingestions/{post.body['ingestion_id']}")
                body = r.json() if r.status_code == 200 else body
            except (httpx.HTTPError, ValueError):
                pass
            upload = body.get("upload") or {}
            progress.append((elapsed, upload.get("rows_read", 0)))
            if body.get("status") in ("finished", "failed"):
                outcome = body["status"] + (f": {upload['error']}" if upload.get("error") else "")
                break
            if elapsed - last_say >= 15:
                last_say = elapsed
                say(f"  {case.name}: upload {upload.get('status')}, {upload.get('rows_read', 0):,} rows read, "
                    f"counts {body.get('counts')} ({elapsed:.0f} s)")  # fmt: skip
            time.sleep(1)
    seconds = time.perf_counter() - started
    if post.is_alive():
        post.error = f"no answer in {seconds:.0f} s"
    answer = post.body if isinstance(post.body, dict) else {"text": post.body}
    result: dict[str, Any] = {
        "http": {"status": post.status, "error": answer.get("error"), "message": answer.get("message"),
                 "failure": post.error},
        "outcome": outcome,
        "seconds": round(seconds, 1),
        "ingestion": {k: body.get(k) for k in ("status", "counts", "upload")} if body else None,
    }  # fmt: skip
    rates = _rates(progress)
    if rates:
        result["read_rates"] = rates
        every = max(1, len(progress) // 20)  # about 20 points of (seconds, rows read)
        result["rows_read_over_time"] = [(round(t), rows) for t, rows in progress[::every] + progress[-1:]]
    return result


def _guard(stack: _Stack, conn: psycopg.Connection, db_before: int, elapsed: float, cap: float, last_size: float):
    """Why the case must stop now, or None."""
    if elapsed > cap:
        return f"not settled in {cap:.0f} s"
    rss = stack.sampler.current_total()
    if rss > RSS_CAP_MIB:
        return f"stopped: the app's processes held {rss / 1024:.1f} GiB"
    available = psutil.virtual_memory().available
    if available < MIN_AVAILABLE_MEMORY:
        return f"stopped: {available / 2**30:.1f} GiB of memory left on the machine (app {rss / 1024:.1f} GiB)"
    if elapsed - last_size >= 2:  # the database size every 2 s
        grown = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] - db_before
        if grown > STORED_CAP:
            return f"stopped: the database grew by {grown / 10**9:.1f} GB"
        free = _free_disk(conn)
        if free < MIN_FREE_DISK // 2:
            return f"stopped: {free / 2**30:.1f} GiB free on the database's disk"
    return None
