"""The outage phase: the pipeline's throughput while the tutors' geocoder hangs.

The app is started again with ``ETL_GEOCODER_URL`` pointing at a socket of the bench that accepts
connections and never answers (the worst outage: every call waits for its read timeout until the
breaker opens). Untimed, before the outage: the phase's tutors and students are seeded through the
batch path. Timed: ``records`` sessions through the batch
path, exactly as the ``batch`` phase sends them, while new tutors (one for every 20 sessions) go
through enrich beside them and keep hitting the hanging geocoder. Reported: the sessions' records
per second (and ÷ the ``batch`` phase of the same run, which runs without a geocoder), the
tutors' lookup statuses, dead letters (none expected), and what the breaker did. The app is
started again without the geocoder at the end, for the phases after it.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import psycopg

from bench.app_phases import _seed_parents, _submit_and_wait, _summary, _track_app
from bench.load import batch_bodies, run_clients
from bench.phases import Context, count_prefix, scalar
from bench.procs import start_app
from bench.progress import say
from etl_app.local.generate import dataset, generate


def _restart(ctx: Context, **env: str | None) -> None:
    if ctx.app is not None:
        for proc in reversed(list(ctx.app.values())):
            ctx.procs.stop(proc)
    for name, value in env.items():
        if value is None:
            ctx.procs.env.pop(name, None)
        else:
            ctx.procs.env[name] = value
    ctx.app, ctx.port = start_app(ctx.procs)


def run_outage(ctx: Context, records: int, batch_size: int = 1000, clients: int = 2) -> dict[str, Any]:
    hanging = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(4096)
    url = f"http://127.0.0.1:{hanging.getsockname()[1]}"
    ds = dataset(records, ctx.seed, id_prefix="og-")
    if ctx.app is None:
        ctx.app, ctx.port = start_app(ctx.procs)
    _seed_parents(ctx, ds)  # before the outage: the sessions' parents are stored
    say(f"outage: the app started again with a geocoder that never answers ({url})")
    _restart(ctx, ETL_GEOCODER_URL=url)
    try:
        extra = max(1, records // 40)
        sessions = list(ds.stream("sessions"))
        halves = {"onset": sessions[: len(sessions) // 2], "steady": sessions[len(sessions) // 2 :]}
        out: dict[str, Any] = {"geocoder": "hanging", "batch_size": batch_size, "clients": clients}
        for n, (part, chunk) in enumerate(halves.items()):
            tutor_bodies = list(batch_bodies(generate("tutors", extra, ctx.seed + 1 + n, id_prefix=f"og{n}-"), 500))
            bodies = list(batch_bodies(iter(chunk), batch_size))
            servers = _track_app(ctx)
            say(f"outage ({part}): {len(chunk):,} sessions while {extra:,} new tutors meet the hanging geocoder")
            assert ctx.port is not None
            tutors = threading.Thread(
                target=run_clients, args=(ctx.port, ctx.api_key, "/api/v1/tutors/batch", tutor_bodies, 1), daemon=True
            )
            tutors.start()
            result, seconds, submit, statuses = _submit_and_wait(
                ctx, "/api/v1/sessions/batch", bodies, clients, len(chunk), f"outage ({part}): sessions settled"
            )
            out[part] = _summary(ctx, result, len(chunk), seconds, submit, statuses, servers)
            tutors.join(timeout=120)
            say(f"outage ({part}): waiting (untimed, at most 5 minutes) for the new tutors to land after their retries")
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if scalar(ctx.database_url, *count_prefix("tutors", "tutor_id", f"og{n}-")) >= extra:
                    break
                time.sleep(2)
            with psycopg.connect(ctx.database_url, autocommit=True) as conn:
                out[part]["tutor_lookup_status"] = dict(
                    conn.execute(
                        "SELECT lookup_status, count(*) FROM tutors WHERE tutor_id LIKE %s GROUP BY 1", (f"og{n}-%",)
                    ).fetchall()
                )
        out["records"] = records
        out["records_per_s"] = out["steady"]["records_per_s"]
        out["onset_records_per_s"] = out["onset"]["records_per_s"]
        out["persisted_rows"] = scalar(ctx.database_url, *count_prefix("sessions", "session_id", "og-"))
        out["dead_letters"] = scalar(ctx.database_url, "SELECT count(*) FROM dead_letters")
        out["new_tutors"] = extra
        return out
    finally:
        hanging.close()
        say("outage: the app started again without the geocoder")
        _restart(ctx, ETL_GEOCODER_URL=None)
