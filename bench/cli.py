"""``python -m bench``: run the phases, print the table, write bench-results/<timestamp>.json."""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench import app_phases, env, hostile, jobs, lookups, outage, phases, report, ui, upload
from bench.noise import ForeignCpu
from bench.procs import ROOT, Processes, start_app
from bench.progress import console, say
from bench.rss import Sampler

PHASES = ("raw", "naive", "batch", "single", "noop", "jobs", "upload", "lookups", "outage", "ui", "soak", "hostile")
# Phases that run only when --only names them (they take long or push the service over its limits).
OPT_IN = ("hostile",)
APP_PHASES = ("batch", "single", "noop", "soak", "upload", "outage")
# (records for raw and batch, naive, single, raw repeats)
DEFAULTS = {
    "records": 200_000,
    "naive": 5_000,
    "single": 5_000,
    "raw_repeats": 2,
    "jobs": 1_000_000,
    "upload": 1_000_000,
    "lookups": 20_000,
    "ui": 1_000_000,
    "soak": 1_000_000,
}
QUICK = {
    "records": 5_000,
    "naive": 300,
    "single": 500,
    "raw_repeats": 1,
    "jobs": 20_000,
    "upload": 5_000,
    "lookups": 2_000,
    "ui": 20_000,
    "soak": 20_000,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes (under a minute), for a smoke run")
    p.add_argument("--records", type=int, help="sessions for the raw limit and the batch path (default 200,000)")
    p.add_argument("--naive-records", type=int, help="sessions for the naive baseline (default 5,000)")
    p.add_argument(
        "--single-records", type=int, help="sessions for the single path and requests to the no-op one (default 5,000)"
    )
    p.add_argument("--jobs-sessions", type=int, help="sessions seeded for the jobs phase (default 1,000,000)")
    p.add_argument("--upload-rows", type=int, help="rows of the CSV file of the upload phase (default 1,000,000)")
    p.add_argument("--lookup-tutors", type=int, help="tutors whose locations the lookups phase asks (default 20,000)")
    p.add_argument("--ui-records", type=int, help="records the ui phase seeds, a tenth dead (default 1,000,000)")
    p.add_argument(
        "--only",
        help=f"comma-separated phases to run, of {','.join(PHASES)} (default: all but {','.join(OPT_IN)})",
    )
    p.add_argument(
        "--hostile-cap",
        type=float,
        default=hostile.CAP_SECONDS,
        help="seconds a hostile file may take before its case stops (default 180)",
    )
    p.add_argument("--hostile-cases", help=f"comma-separated cases of the hostile phase (default: all of "
                                           f"{','.join(hostile.CASE_NAMES)})")  # fmt: skip
    p.add_argument(
        "--idempotency-keys",
        action="store_true",
        help="the single phase sends each request with an Idempotency-Key of its own (a new UUID)",
    )
    p.add_argument(
        "--soak",
        type=int,
        metavar="N",
        help="sessions of the memory soak through the batch path, RSS at every 100,000 (default 1,000,000); "
        "without --only, the soak alone",
    )
    p.add_argument("--raw-chunk", type=int, default=10_000, help="rows a transaction in the raw limit")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stall-seconds", type=float, default=90, help="give a phase up when nothing moves this long")
    p.add_argument("--results-dir", type=Path, default=ROOT / "bench-results")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    args.records = args.records or sizes["records"]
    args.naive_records = args.naive_records or sizes["naive"]
    args.single_records = args.single_records or sizes["single"]
    args.raw_repeats = sizes["raw_repeats"]
    args.jobs_sessions = args.jobs_sessions or sizes["jobs"]
    args.upload_rows = args.upload_rows or sizes["upload"]
    args.lookup_tutors = args.lookup_tutors or sizes["lookups"]
    args.ui_records = args.ui_records or sizes["ui"]
    soak_alone = bool(args.soak) and not args.only
    args.soak = args.soak or sizes["soak"]
    if args.only:
        args.phases = [x.strip() for x in args.only.split(",") if x.strip()]
        unknown = set(args.phases) - set(PHASES)
        if unknown:
            p.error(f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    else:
        args.phases = ["soak"] if soak_alone else [name for name in PHASES if name not in OPT_IN]
    args.hostile_cases = [x.strip() for x in (args.hostile_cases or "").split(",") if x.strip()]
    unknown_cases = set(args.hostile_cases) - set(hostile.CASE_NAMES)
    if unknown_cases:
        p.error(
            f"unknown hostile case(s) {', '.join(sorted(unknown_cases))}; choose from {', '.join(hostile.CASE_NAMES)}"
        )
    return args


def _git() -> dict[str, Any]:
    def run(*cmd: str) -> str:
        out = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def _app_env(database_url: str, redis_url: str, keys: str, var_dir: Path) -> dict[str, str]:
    """The app's environment: the scratch services, the keys, and the no-op endpoint on (etl_app.api.noop)."""
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    return {**base, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "ETL_API_KEYS": keys,
            "ETL_VAR_DIR": str(var_dir), "ETL_BENCH_NOOP": "1"}  # fmt: skip


def _log_problems(log_dir: Path) -> list[str]:
    """One note per log with ERROR lines or tracebacks."""
    notes = []
    for path in sorted(log_dir.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()
        errors = [line for line in lines if " ERROR" in line or "CRITICAL" in line]
        tracebacks = sum(1 for line in lines if line.startswith("Traceback"))
        if errors or tracebacks:
            first = (errors[0] if errors else "")[:200]
            notes.append(f"{path.name}: {len(errors)} ERROR lines, {tracebacks} tracebacks; first: {first}")
    return notes


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with env.exclusive(env.database_url(), env.redis_url()):
            return _run(args)
    except env.BenchBusy as exc:
        console.print(f"[red]{exc}: wait for it to end[/red]")
        return 2


def _run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    begun = time.perf_counter()
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    log_dir = args.results_dir / f"{started_at.replace(':', '').replace('-', '')}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    database_url, redis_url = env.database_url(), env.redis_url()
    api_key = "bench-" + secrets.token_urlsafe(16)  # admin: reads, uploads, the other phases
    submit_key = "bench-ingest-" + secrets.token_urlsafe(16)  # ingest role: what a submitting client holds
    results: dict[str, Any] = {
        "started_at": started_at,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "git": _git(),
        "tuning_env": {k: v for k, v in os.environ.items() if k.startswith(("ETL_", "CELERY_"))},
        "database_url": database_url,
        "redis_url": redis_url,
        "logs": str(log_dir),
        "phases": {},
        "notes": [],
    }
    procs = Processes(log_dir, _app_env(database_url, redis_url, f"{api_key},{submit_key}:ingest", log_dir))
    sampler = Sampler().start()
    foreign = ForeignCpu(database=env.BENCH_DB).start()
    ctx = phases.Context(database_url, redis_url, api_key, procs, sampler, args.seed, args.stall_seconds, log_dir,
                         submit_key=submit_key, foreign=foreign)  # fmt: skip
    status = 0
    try:
        say(f"scratch database {database_url} (re-created, migrated); Redis {redis_url} (flushed)")
        env.recreate_database(database_url)
        env.flush_redis(redis_url)
        results["machine"].update(env.server_info(database_url))
        for name in args.phases:
            before, programs_before = foreign.seconds(), foreign.programs()
            results["phases"][name] = phase = _run_phase(name, args, ctx)
            after, programs = foreign.seconds(), foreign.programs()
            busiest = sorted(((v - programs_before.get(k, 0.0), k) for k, v in programs.items()), reverse=True)[:3]
            phase["foreign_cpu_seconds"] = round(after[0] - before[0], 1)
            phase["server_cpu_seconds"] = round(after[1] - before[1], 1)
            share = phase["foreign_cpu_seconds"] / (max(phase["phase_seconds"], 0.1) * (os.cpu_count() or 1))
            if share > 0.05:
                results["notes"].append(
                    f"{name}: other programs used {share:.0%} of the CPU time while it ran "
                    f"({phase['foreign_cpu_seconds']:.0f} CPU-s in {phase['phase_seconds']:.0f} s; "
                    + ", ".join(f"{k} {v:.0f} s" for v, k in busiest)
                    + "): its figures are low"
                )
    except KeyboardInterrupt:
        results["interrupted"] = True
        status = 130
        console.print("[red]interrupted: stopping every process the benchmark started[/red]")
    finally:
        procs.stop_all()
        sampler.stop()
        foreign.stop()
    results["notes"] += _log_problems(log_dir)
    load = os.getloadavg()[0]
    results["machine"]["loadavg_at_end"] = round(load, 2)
    results.update(report.derived(results["phases"]))
    results["total_seconds"] = round(time.perf_counter() - begun, 1)
    console.print()
    report.render(results)
    path = report.write(results, args.results_dir)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    console.print(f"total {results['total_seconds']:.0f}s; results in {shown}; logs in {log_dir}")
    return status


def _run_phase(name: str, args: argparse.Namespace, ctx: phases.Context) -> dict[str, Any]:
    """Run one phase; an error is reported in its result, and the next phase still runs."""
    say(f"[bold]{name}[/bold]")
    started = time.perf_counter()
    me = psutil.Process()
    cpu_before = sum(me.cpu_times()[:2])
    try:
        if name in APP_PHASES and ctx.app is None:
            say("starting the app: the Procfile's web (gunicorn, 2 workers) and worker (celery, -c 2)")
            ctx.app, ctx.port = start_app(ctx.procs)
        if name == "raw":
            result = phases.run_raw(ctx, args.records, args.raw_chunk, args.raw_repeats)
        elif name == "naive":
            result = phases.run_naive(ctx, args.naive_records)
        elif name == "batch":
            result = app_phases.run_batch(ctx, args.records)
        elif name == "single":
            result = app_phases.run_single(ctx, args.single_records, idempotency_keys=args.idempotency_keys)
        elif name == "noop":
            result = app_phases.run_noop(ctx, args.single_records)
        elif name == "jobs":
            result = jobs.run_jobs(ctx, args.jobs_sessions)
        elif name == "upload":
            result = upload.run_upload(ctx, args.upload_rows)
        elif name == "lookups":
            result = lookups.run_lookups(ctx, args.lookup_tutors)
        elif name == "outage":
            result = outage.run_outage(ctx, args.records)
        elif name == "ui":
            result = ui.run_ui(ctx, args.ui_records, args.ui_records // 10)
        elif name == "hostile":
            scale = 0.01 if args.quick else 1.0
            result = hostile.run_hostile(ctx, args.hostile_cap, args.hostile_cases, scale)
        else:
            result = app_phases.run_soak(ctx, args.soak, every=min(100_000, max(args.soak // 5, 1)))
    except Exception as exc:  # noqa: BLE001 - reported in the results; the next phase still runs
        console.print(f"[red]{name} failed: {type(exc).__name__}: {exc}[/red]")
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["phase_seconds"] = round(time.perf_counter() - started, 1)
    result["bench_process_cpu_seconds"] = round(sum(me.cpu_times()[:2]) - cpu_before, 1)
    say(f"{name} done in {result['phase_seconds']:.0f}s")
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
