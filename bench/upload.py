"""The upload phase: one CSV file of sessions through ``POST /api/v1/sessions/upload``.

The file is written to disk first (untimed), its tutors and students are seeded through the batch
path (untimed), then the file is sent streaming (never read into the bench's memory) and the
phase waits until its ingestion settles. Reported: the seconds from the first byte sent to the
last record settled, rows per second, the seconds the API took to store the file, and the
resident memory of every web and worker process at the start and at its peak (sampled every
a quarter of a second), to show that neither holds the file.

"The last record settled" is the ingestion's ``finished_at`` (its last record's settling, or the
end of the parse), read once the phase sees the ingestion finished: the batch phase's measure
too, every record persisted, whereas the ingestion shows ``finished`` only once its quality is
also stored, which for one ingestion of 50,000 rows is measured after its last record (0.3 to
1.7 s here) while the batch path's ingestions are measured as they settle, one after another,
beside the rest. A record's settling time is its persist transaction's start (``now()``), tens
of ms before that transaction commits; the batch phase sees its last record up to its polling
interval late. The seconds until the phase saw the ingestion finished are reported too
(``finished_seconds``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from bench.app_phases import _seed_parents, _track_app, servers_cpu
from bench.phases import Context, count_prefix, scalar
from bench.progress import say
from bench.rss import rss_by_process
from etl_app.local.generate import dataset, write_records

# How often the phase asks whether the ingestion has settled (and samples memory): its seconds
# overshoot the last record's by half of it on average, a tenth of a 50,000-row run at 1 s.
POLL_SECONDS = 0.25


def _peaks(ctx: Context, peaks: dict[str, dict[str, float]]) -> None:
    assert ctx.app is not None
    for name, proc in ctx.app.items():
        for process, rss in rss_by_process(proc.pid).items():
            group = peaks.setdefault(name, {})
            group[process] = round(max(group.get(process, 0.0), rss), 1)


def run_upload(ctx: Context, rows: int) -> dict[str, Any]:
    ds = dataset(rows, ctx.seed, id_prefix="up-")
    path = Path(ctx.log_dir) / f"sessions-{rows}.csv"
    say(f"upload: writing {rows:,} sessions to {path.name} (untimed)")
    with path.open("wb") as f:
        write_records(ds.stream("sessions"), f, "csv", "sessions")
    size = path.stat().st_size
    _seed_parents(ctx, ds)
    servers = _track_app(ctx)
    assert ctx.app is not None
    at_start = {name: rss_by_process(proc.pid) for name, proc in ctx.app.items()}
    peaks: dict[str, dict[str, float]] = {}
    headers = {"Authorization": f"Bearer {ctx.api_key}"}
    say(f"upload: sending {size / 2**20:.0f} MiB")
    started, started_at, client_cpu = time.perf_counter(), time.time(), time.thread_time()
    with path.open("rb") as f, httpx.Client(timeout=600) as client:
        r = client.post(
            f"http://127.0.0.1:{ctx.port}/api/v1/sessions/upload",
            headers=headers,
            files={"file": (path.name, f, "text/csv")},
        )
    stored = time.perf_counter() - started
    if r.status_code != 202:
        raise RuntimeError(f"upload answered {r.status_code}: {r.text[:500]}")
    ingestion_id = r.json()["ingestion_id"]
    body: dict[str, Any] = {}
    last_report = 0.0
    with httpx.Client(timeout=60, headers=headers) as client:
        while True:
            _peaks(ctx, peaks)
            body = client.get(f"http://127.0.0.1:{ctx.port}/api/v1/ingestions/{ingestion_id}").json()
            if body["status"] != "running":
                break
            now = time.perf_counter()
            if now - last_report > 15:
                counts, upload = body["counts"], body.get("upload") or {}
                say(
                    f"upload: {upload.get('rows_read', 0):,} rows read, {counts['persisted']:,} persisted "
                    f"({now - started:.0f} s)"
                )
                last_report = now
            time.sleep(POLL_SECONDS)
    finished_seconds = time.perf_counter() - started
    client_cpu = time.thread_time() - client_cpu
    finished_at = scalar(
        ctx.database_url, "SELECT extract(epoch FROM finished_at) FROM ingestions WHERE id = %s", (ingestion_id,)
    )
    seconds = float(finished_at) - started_at if finished_at is not None else finished_seconds
    _peaks(ctx, peaks)
    counts = body["counts"]
    settled = counts["persisted"] + counts["dead"] + counts["rejected"]
    return {
        "rows": rows,
        "file_mib": round(size / 2**20, 1),
        "status": body["status"],
        "counts": counts,
        "store_seconds": round(stored, 2),
        "seconds": round(seconds, 2),
        "finished_seconds": round(finished_seconds, 2),
        "rows_per_s": round(settled / seconds, 1),
        "persisted_rows": scalar(ctx.database_url, *count_prefix("sessions", "session_id", "up-")),
        "quality": body.get("quality"),
        "rss_mib_at_start": {k: {p: round(v, 1) for p, v in procs.items()} for k, procs in at_start.items()},
        "rss_mib_peak": peaks,
        "peak_rss_mib": ctx.sampler.snapshot(),
        "cpu_seconds": ctx.sampler.cpu_seconds(),
        "servers_cpu_seconds": servers_cpu(ctx, servers),
        "client_cpu_seconds": round(client_cpu, 3),  # sending the file, then following the ingestion
    }
