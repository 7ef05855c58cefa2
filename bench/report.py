"""The results: ratios and targets, a rich table, and the JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from rich.table import Table

from bench.progress import console

# (name, what, test on the value or None for a figure without a target, text of the target)
TARGETS = (
    ("batch_over_raw", "batch ÷ raw (new rows)", lambda v: v >= 0.15, "≥ 0.15"),
    ("single_over_noop", "single ÷ no-op endpoint (settled rec/s ÷ answers/s)", None, "-"),
    ("single_records_per_s", "single rec/s (every record settled)", lambda v: v >= 1000, "≥ 1,000"),
    ("api_p99_ms", "single API p99 (ms)", lambda v: v < 25, "< 25"),
    ("noop_p99_ms", "no-op endpoint p99 (ms)", None, "-"),
    ("upload_over_batch", "upload ÷ batch", lambda v: v >= 0.8, "≥ 0.8"),
    ("single_over_naive", "single ÷ naive", lambda v: v >= 3, "≥ 3"),
)
# µs of CPU per record: (column, the phase's CPU seconds of that kind)
CPU_KINDS = (
    ("web", lambda p: _tree(p, "web")),
    ("worker main", lambda p: ((p.get("cpu_seconds") or {}).get("worker") or {}).get("main")),
    ("worker children", lambda p: ((p.get("cpu_seconds") or {}).get("worker") or {}).get("children")),
    ("other app processes", lambda p: _others(p)),
    ("PostgreSQL+Redis", lambda p: p.get("servers_cpu_seconds")),
    ("bench client", lambda p: p.get("client_cpu_seconds")),
)
CPU_PHASES = ("batch", "single", "noop", "upload")


def _tree(phase: dict[str, Any], group: str) -> float | None:
    cpu = (phase.get("cpu_seconds") or {}).get(group)
    return None if not cpu else cpu["main"] + cpu["children"]


def _others(phase: dict[str, Any]) -> float | None:
    """The app's processes but web and worker (the lookups and dead-letter workers)."""
    cpu = phase.get("cpu_seconds") or {}
    groups = [v for k, v in cpu.items() if k not in ("web", "worker")]
    return sum(v["main"] + v["children"] for v in groups) if groups else None


def cpu_per_record(phases: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """µs of CPU per record by process kind, for the phases that measure it (the measured part:
    from the first request to the last record settled; the bench client: its own threads)."""
    out = {}
    for name in CPU_PHASES:
        phase = phases.get(name) or {}
        records = phase.get("accepted") or phase.get("rows")
        if not records or "cpu_seconds" not in phase:
            continue
        out[name] = {}
        for kind, seconds_of in CPU_KINDS:
            seconds = seconds_of(phase)
            out[name][kind] = None if seconds is None else round(seconds * 1e6 / records, 1)
        known = [v for v in out[name].values() if v is not None]
        out[name]["total"] = round(sum(known), 1) if known else None
    return out


def soak_rss(phases: dict[str, Any]) -> list[dict[str, Any]]:
    """The soak's resident memory by process tree (MiB) at every mark (each 100,000 records)."""
    return list((phases.get("soak") or {}).get("snapshots") or [])


def derived(phases: dict[str, Any]) -> dict[str, Any]:
    """Ratios, and each target as met / not met (None when a phase did not run)."""
    raw, naive = phases.get("raw") or {}, phases.get("naive") or {}
    batch, single, noop = phases.get("batch") or {}, phases.get("single") or {}, phases.get("noop") or {}
    values = {
        "batch_over_raw": _ratio(batch.get("records_per_s"), raw.get("insert_rows_per_s")),
        "single_over_noop": _ratio(single.get("records_per_s"), noop.get("records_per_s")),
        "single_api_over_noop": _ratio(single.get("api_records_per_s"), noop.get("records_per_s")),
        "single_records_per_s": single.get("records_per_s"),
        "noop_p99_ms": (noop.get("latency_ms") or {}).get("p99"),
        "single_over_naive": _ratio(single.get("records_per_s"), naive.get("records_per_s")),
        "api_p99_ms": (single.get("latency_ms") or {}).get("p99"),
        "upload_over_batch": _ratio((phases.get("upload") or {}).get("rows_per_s"), batch.get("records_per_s")),
        "outage_over_batch": _ratio((phases.get("outage") or {}).get("records_per_s"), batch.get("records_per_s")),
        "outage_onset_over_batch": _ratio(
            (phases.get("outage") or {}).get("onset_records_per_s"), batch.get("records_per_s")
        ),
    }
    targets = {
        name: {
            "value": values[name],
            "target": text,
            "met": None if values[name] is None or test is None else bool(test(values[name])),
        }
        for name, _, test, text in TARGETS
    }
    ratios = (
        "batch_over_raw",
        "single_over_noop",
        "single_api_over_noop",
        "single_over_naive",
        "upload_over_batch",
        "outage_over_batch",
        "outage_onset_over_batch",
    )
    return {
        "ratios": {k: values[k] for k in ratios},
        "targets": targets,
        "cpu_us_per_record": cpu_per_record(phases),
        "soak_rss_mib": soak_rss(phases),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, (int, float)) else str(value)


def _rss(phase: dict[str, Any], name: str) -> str:
    return _n((phase.get("peak_rss_mib") or {}).get(name))


def _rows(phases: dict[str, Any]) -> list[list[str]]:
    """measure, records, seconds, records/s, p50, p99, worker MiB, web MiB."""
    rows = []
    raw = phases.get("raw")
    if raw and "runs" in raw:
        insert_s = min(r["insert_seconds"] for r in raw["runs"])
        update_s = min(r["update_seconds"] for r in raw["runs"])
        rows.append(["raw limit: new rows", _n(raw["records"]), _n(insert_s, 2), _n(raw["insert_rows_per_s"])])
        rows.append(["raw limit: all updates", _n(raw["records"]), _n(update_s, 2), _n(raw["update_rows_per_s"])])
    naive = phases.get("naive")
    if naive and "records_per_s" in naive:
        rows.append(["naive baseline (chain per record)", _n(naive["records"]), _n(naive["seconds"], 2),
                     _n(naive["records_per_s"]), "", "", _rss(naive, "worker")])  # fmt: skip
    for key, label in (
        ("batch", "batch path (1,000/request, 2 clients)"),
        ("single", "single path (8 clients, a connection each request)"),
        ("noop", "no-op endpoint (the same requests)"),
        ("outage", "batch path, geocoder hanging"),
    ):
        phase = phases.get(key)
        if key == "outage" and phase and "steady" in phase:
            for part in ("onset", "steady"):
                sub = phase[part]
                p50, p99 = _n(sub["latency_ms"]["p50"], 1), _n(sub["latency_ms"]["p99"], 1)
                figures = [_n(sub["accepted"]), _n(sub["seconds"], 2), _n(sub["records_per_s"]), p50, p99]
                rows.append([f"{label} ({part})", *figures, _rss(sub, "worker"), _rss(sub, "web")])
            continue
        if phase and "records_per_s" in phase:
            p50, p99 = _n(phase["latency_ms"]["p50"], 1), _n(phase["latency_ms"]["p99"], 1)
            figures = [_n(phase["accepted"]), _n(phase["seconds"], 2), _n(phase["records_per_s"]), p50, p99]
            rows.append([label, *figures, _rss(phase, "worker"), _rss(phase, "web")])
    upload = phases.get("upload")
    if upload and "rows_per_s" in upload:
        peaks = upload["rss_mib_peak"]
        worker, web = (_n(max((peaks.get(k) or {0: 0}).values()), 0) for k in ("worker", "web"))
        rows.append([f"upload: one CSV file ({upload['file_mib']:.0f} MiB)", _n(upload["rows"]),
                     _n(upload["seconds"], 1), _n(upload["rows_per_s"]), "", "", worker + " (1 proc)",
                     web + " (1 proc)"])  # fmt: skip
    return [row + [""] * (8 - len(row)) for row in rows]


def render(results: dict[str, Any]) -> None:
    phases = results["phases"]
    table = Table(title=f"etl_app bench ({results['started_at']}, {results['machine']['cpus']} CPUs)")
    for column in ("measure", "records", "seconds", "records/s", "p50 ms", "p99 ms", "worker MiB", "web MiB"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for row in _rows(phases):
        table.add_row(*row)
    if table.row_count:
        console.print(table)
    if any(t["value"] is not None for t in results["targets"].values()):
        console.print(_targets_table(results["targets"]))
    if results.get("cpu_us_per_record"):
        console.print(_cpu_per_record_table(results["cpu_us_per_record"]))

    cpu = _cpu_table(phases)
    if cpu.row_count:
        console.print(cpu)

    jobs = phases.get("jobs")
    if jobs and "jobs" in jobs:
        console.print(_jobs_table(jobs))

    ui = phases.get("ui")
    if ui and "pages" in ui:
        console.print(_ui_table(ui))
        for skipped in ui.get("skipped", []):
            console.print(f"[dim]ui: not timed: {skipped['route']} ({skipped['reason']})[/dim]")

    hostile = phases.get("hostile")
    if hostile and hostile.get("cases"):
        console.print(_hostile_table(hostile))

    soak = phases.get("soak")
    if soak and "rss_by_process" in soak:
        console.print(_soak_steps_table(soak))
        console.print(_soak_table(soak))
    for key, phase in phases.items():
        if phase and phase.get("error"):
            console.print(f"[red]{key}: {phase['error']}[/red]")
    for note in results.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}")


def _targets_table(targets: dict[str, Any]) -> Table:
    table = Table(title="targets")
    for column in ("ratio / figure", "value", "target", "status"):
        table.add_column(column)
    for name, label, _, _ in TARGETS:
        t = targets[name]
        status = "-" if t["met"] is None else "[green]met[/green]" if t["met"] else "[red]not met[/red]"
        digits = 3 if "_over_" in name else 0 if name.endswith("_per_s") else 1
        table.add_row(label, _n(t["value"], digits), t["target"], status)
    return table


def _cpu_per_record_table(per_record: dict[str, dict[str, float | None]]) -> Table:
    table = Table(title="µs of CPU per record (the measured part; bench client: its own threads)")
    table.add_column("phase")
    for kind, _ in CPU_KINDS:
        table.add_column(kind, justify="right")
    table.add_column("total", justify="right")
    for name, kinds in per_record.items():
        table.add_row(name, *(_n(kinds.get(kind)) for kind, _ in CPU_KINDS), _n(kinds.get("total")))
    return table


def _soak_steps_table(soak: dict[str, Any]) -> Table:
    """Summed RSS of each app process tree at every mark of the soak."""
    steps = soak["snapshots"]
    groups = list(dict.fromkeys(k for step in steps for k in step if k != "settled"))
    table = Table(title=f"memory soak: MiB by process tree, every {_n(soak.get('every'))} records settled")
    table.add_column("records settled", justify="right")
    for group in groups:
        table.add_column(group, justify="right")
    table.add_column("all", justify="right")
    for step in steps:
        values = [step.get(g) for g in groups]
        table.add_row(_n(step["settled"]), *(_n(v, 1) for v in values), _n(sum(v or 0 for v in values), 1))
    return table


def _cpu_table(phases: dict[str, Any]) -> Table:
    """Where the CPU went in each phase (measured part for worker/web; whole phase for the rest)."""
    table = Table(title="CPU seconds (worker, web: the measured part; the rest: the whole phase)")
    columns = ("phase", "worker main", "worker children", "web main", "web children", "bench process",
               "PostgreSQL+Redis", "other programs")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "phase" else "right")
    for name, phase in phases.items():
        cpu = (phase or {}).get("cpu_seconds")
        if not cpu:
            continue
        worker, web = cpu.get("worker", {}), cpu.get("web", {})
        table.add_row(name, _n(worker.get("main"), 1), _n(worker.get("children"), 1), _n(web.get("main"), 1),
                      _n(web.get("children"), 1), _n(phase.get("bench_process_cpu_seconds"), 1),
                      _n(phase.get("server_cpu_seconds"), 1), _n(phase.get("foreign_cpu_seconds"), 1))  # fmt: skip
    return table


def _jobs_table(jobs: dict[str, Any]) -> Table:
    """Seconds per job over the seeded month: the functions alone (first run, re-run) and through the runner."""
    title = (f"jobs over {jobs['records']:,} seeded sessions, {jobs['window'][0]} to {jobs['window'][1]} "
             f"(seeded in {_n(jobs['seed_seconds'], 1)} s)")  # fmt: skip
    table = Table(title=title)
    for column in ("job", "seconds", "rows", "re-run seconds", "re-run rows", "runner seconds", "runner rows"):
        table.add_column(column, justify="left" if column == "job" else "right")
    runner = jobs.get("runner") or {}
    for name in dict.fromkeys([*jobs["jobs"], *runner]):
        alone, through = jobs["jobs"].get(name, {}), runner.get(name, {})
        table.add_row(name, _n(alone.get("seconds"), 2), _n(alone.get("rows")), _n(alone.get("rerun_seconds"), 2),
                      _n(alone.get("rerun_rows")), _n(through.get("seconds"), 2), _n(through.get("rows")))  # fmt: skip
    return table


def _ui_table(ui: dict[str, Any]) -> Table:
    """Each operator page: its answer and milliseconds over the seeded records, the slowest marked."""
    seeded = ui["seeded"]
    title = (f"operator pages over {_n(seeded['raw_records'])} records and {_n(seeded['dead_letters'])} dead letters "
             f"(seeded in {_n(seeded['seed_seconds'], 0)} s); {ui['pages'][0]['requests'] if ui['pages'] else 0} "
             "requests a page, one at a time")  # fmt: skip
    table = Table(title=title)
    for column in ("page", "status", "KiB", "first ms", "median ms", "max ms"):
        table.add_column(column, justify="left" if column == "page" else "right")
    slowest = (ui.get("slowest") or {}).get("path")
    for page in ui["pages"]:
        path = page["path"] + (" (event stream: first event)" if page.get("stream") else "")
        status = ",".join(str(s) for s in page["status"])
        if any(s >= 400 for s in page["status"]):
            status = f"[red]{status}[/red]"
        median = _n(page["median_ms"], 1)
        if page["path"] == slowest:
            path, median = f"[bold]{path}[/bold] (slowest)", f"[bold]{median}[/bold]"
        table.add_row(path, status, _n(page["bytes"] / 1024, 1), _n(page["first_ms"], 1), median, _n(page["max_ms"], 1))
    return table


def _hostile_table(hostile: dict[str, Any]) -> Table:
    """Each hostile file: its answer, outcome, seconds, peak memory, bytes stored and rows produced."""
    title = f"hostile files (each case capped at {hostile['cap_seconds']:.0f} s"
    title += ")" if hostile.get("scale", 1) == 1 else f", sizes × {hostile['scale']})"
    table = Table(title=title)
    columns = ("case", "file KiB", "HTTP", "outcome", "seconds", "web MiB", "worker MiB", "stored MiB",
               "records", "rejections", "outbox")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("case", "HTTP", "outcome") else "right")
    for case in hostile["cases"]:
        if "error" in case:
            table.add_row(case["case"], "", "", f"[red]{case['error']}[/red]")
            continue
        if "http" not in case:
            table.add_row(case["case"], _n(case["file_bytes"] / 1024, 1), "", case.get("outcome", ""))
            continue
        http = case["http"]
        answer = f"{http['status']} {http['error'] or ''}".strip() if http["status"] else (http["failure"] or "-")
        rss = case.get("rss_mib") or {}

        def mib(group: str, rss: dict[str, Any] = rss) -> str:
            peaks = rss.get(group) or {}
            return f"{_n(peaks.get('largest_process'))} / {_n(peaks.get('tree_peak'))}"

        rows = case.get("rows") or {}
        table.add_row(case["case"], _n(case["file_bytes"] / 1024, 1), answer, case["outcome"],
                      _n(case["seconds"], 1), mib("web"), mib("worker"),
                      _n(case["stored_bytes"]["database"] / 2**20, 1), _n(rows.get("records")),
                      _n(rows.get("rejections")), _n(rows.get("raw_records")))  # fmt: skip
    table.caption = "MiB: largest process / the whole tree (main + children) at its peak"
    return table


def _soak_table(soak: dict[str, Any]) -> Table:
    """RSS of every app process at the start, at the first mark (100k) and at the end of the soak."""
    snaps = soak["rss_by_process"]
    chosen = [snaps[0], *snaps[1:-1][:1], snaps[-1]]
    title = f"memory soak: {soak['records']:,} sessions through the batch path, {_n(soak['records_per_s'])}/s"
    table = Table(title=title)
    table.add_column("process (pid, command)")
    for snap in chosen:
        table.add_column(f"MiB at {snap['settled']:,}", justify="right")
    rows: dict[str, list[str]] = {}
    for i, snap in enumerate(chosen):
        for group, procs in snap.items():
            if isinstance(procs, dict):
                for proc, mib in procs.items():
                    rows.setdefault(f"{group}: {proc}", ["-"] * len(chosen))[i] = _n(mib, 1)
    for name, values in rows.items():
        table.add_row(name, *values)
    return table


def write(results: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{results['started_at'].replace(':', '').replace('-', '')}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return path
