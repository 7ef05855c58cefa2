"""The benchmark's own pieces on a tiny input: the naive baseline's tasks and the raw limit.

No timing is asserted here; `make bench` reports the figures.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl_app.local.generate import dataset

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # bench/ is a folder of the repository, not an installed package
    sys.path.insert(0, ROOT)

from bench import naive_tasks, raw, report  # noqa: E402


@pytest.fixture
def eager_naive(database_url):
    naive_tasks.configure(database_url=database_url)
    naive_tasks.app.conf.task_always_eager = True
    yield naive_tasks
    naive_tasks.app.conf.task_always_eager = False
    naive_tasks.configure(database_url=None)


def test_naive_chains_upsert_every_record(eager_naive, engine, unique):
    ds = dataset(200, seed=4, id_prefix=f"{unique}-")
    ingestion_id = str(uuid.uuid4())
    for record_type in ("tutors", "students", "sessions", "sessions"):  # sessions twice: the upsert updates
        for payload in ds.stream(record_type):
            eager_naive.record_chain(record_type, payload, ingestion_id).apply_async()
    with engine.connect() as conn:
        sessions = conn.execute(
            sa.text("SELECT count(*), bool_and(source = 'bench-naive') FROM sessions WHERE session_id LIKE :p"),
            {"p": f"{unique}-%"},
        ).one()
        tutors = conn.execute(sa.text("SELECT count(*) FROM tutors WHERE tutor_id LIKE :p"), {"p": f"{unique}-%"})
        assert tuple(sessions) == (200, True)
        assert tutors.scalar() == ds.counts["tutors"]


def test_raw_limit_writes_and_rewrites_the_rows(database_url):
    payloads = list(dataset(300, seed=4).stream("sessions"))
    result = raw.raw_limit(database_url, payloads, chunk=128)
    assert result["records"] == result["rows_stored"] == 300
    assert result["insert_rows_per_s"] > 0 and result["update_rows_per_s"] > 0


def _cpu(web: float, worker: float, children: float) -> dict:
    return {"web": {"main": 0.0, "children": web}, "worker": {"main": worker, "children": children},
            "lookups": {"main": 0.01, "children": 0.0}}  # fmt: skip


def _http(accepted: int, per_s: float, p99: float, cpu: dict, servers: float, client: float) -> dict:
    return {"accepted": accepted, "seconds": accepted / per_s, "records_per_s": per_s,
            "latency_ms": {"p50": p99 / 3, "p99": p99}, "cpu_seconds": cpu, "servers_cpu_seconds": servers,
            "client_cpu_seconds": client}  # fmt: skip


PHASES = {
    "raw": {"records": 1000, "insert_rows_per_s": 100_000.0, "update_rows_per_s": 50_000.0,
            "runs": [{"insert_seconds": 0.01, "update_seconds": 0.02}]},
    "naive": {"records": 100, "seconds": 0.5, "records_per_s": 200.0},
    "batch": _http(1000, 20_000.0, 80.0, _cpu(0.02, 0.01, 0.03), 0.02, 0.001),
    "single": {**_http(100, 500.0, 30.0, _cpu(0.3, 0.05, 0.2), 0.2, 0.03), "api_records_per_s": 800.0},
    "noop": _http(100, 2_000.0, 9.0, _cpu(0.1, 0.0, 0.0), 0.001, 0.02),
    "upload": {"rows": 1000, "file_mib": 1.0, "seconds": 1000 / 17_000, "rows_per_s": 17_000.0,
               "rss_mib_peak": {"web": {"1 gunicorn": 90.0}, "worker": {"2 celery": 120.0}},
               "cpu_seconds": _cpu(0.01, 0.02, 0.05), "servers_cpu_seconds": 0.03, "client_cpu_seconds": 0.005},
    "soak": {"records": 300, "every": 100, "records_per_s": 1000.0, "snapshots": [
        {"settled": n, "web": 100.0 + n / 100, "worker": 200.0} for n in (0, 100, 200, 300)],
             "rss_by_process": [{"settled": n, "web": {"1 gunicorn": 100.0}} for n in (0, 100, 200, 300)]},
}  # fmt: skip


def test_targets_are_reported_not_asserted():
    targets = report.derived(PHASES)["targets"]
    assert {k: (v["value"], v["met"]) for k, v in targets.items()} == {
        "batch_over_raw": (0.2, True),
        "single_over_noop": (0.25, None),  # stated, no target of its own
        "single_records_per_s": (500.0, False),
        "api_p99_ms": (30.0, False),
        "noop_p99_ms": (9.0, None),
        "upload_over_batch": (0.85, True),
        "single_over_naive": (2.5, False),
    }
    assert report.derived({})["targets"]["batch_over_raw"]["met"] is None


def test_cpu_per_record_by_process_kind():
    per_record = report.derived(PHASES)["cpu_us_per_record"]
    assert set(per_record) == {"batch", "single", "noop", "upload"}
    assert per_record["single"] == {
        "web": 3000.0,
        "worker main": 500.0,
        "worker children": 2000.0,
        "other app processes": 100.0,
        "PostgreSQL+Redis": 2000.0,
        "bench client": 300.0,
        "total": 7900.0,
    }
    assert per_record["upload"]["worker children"] == 50.0  # per row of the file


def test_the_printed_tables_state_each_ratio_the_cpu_per_record_and_the_soaks_steps():
    from bench.progress import console

    results = {"started_at": "2026-01-01T00:00:00Z", "machine": {"cpus": 2}, "phases": PHASES, "notes": []}
    results.update(report.derived(PHASES))
    with console.capture() as captured:
        report.render(results)
    lines = captured.get().splitlines()

    def line(start: str) -> str:
        found = [x for x in lines if x.strip("│ ").startswith(start)]
        assert found, f"no line starting {start!r} in:\n" + "\n".join(lines)
        return found[0]

    assert "0.200" in line("batch ÷ raw") and "≥ 0.15" in line("batch ÷ raw")
    assert "0.250" in line("single ÷ no-op endpoint")
    assert "500" in line("single rec/s") and "≥ 1,000" in line("single rec/s") and "not met" in line("single rec/s")
    assert "30.0" in line("single API p99") and "< 25" in line("single API p99")
    assert "0.850" in line("upload ÷ batch") and "≥ 0.8" in line("upload ÷ batch")
    assert "no-op endpoint (the same requests)" in "\n".join(lines)
    cpu_header = next(x for x in lines if "worker children" in x and "bench client" in x)
    assert "PostgreSQL+Redis" in cpu_header and "web" in cpu_header

    def cells(first: str) -> list[list[str]]:
        rows = [[c.strip() for c in x.split("│")[1:-1]] for x in lines if x.startswith("│")]
        return [r for r in rows if r and r[0] == first]

    assert ["3,000", "500", "2,000", "100", "2,000", "300", "7,900"] in [r[1:] for r in cells("single")]
    assert [cells(f"{n:,}")[0][1:] for n in (0, 300)] == [["100.0", "200.0", "300.0"], ["103.0", "200.0", "303.0"]]


def test_postgres_backends_of_other_databases_are_not_counted_as_the_benchmarks_servers():
    """A test suite on the same PostgreSQL would swell the servers' CPU per record."""
    from bench.noise import other_database

    other = "postgres: 15/main: postgres etl_app_test_11931_27b3f8 127.0.0.1(46582) idle in transaction"
    assert other_database(other, "etl_app_bench") and other_database("postgres: app x [local] idle", "etl_app_bench")
    ours = ("postgres: 15/main: postgres etl_app_bench 127.0.0.1(46582) idle", "postgres: 15/main: checkpointer ",
            "postgres: 15/main: walwriter", "postgres: postgres etl_app_bench_hostile 127.0.0.1(1) COPY")  # fmt: skip
    assert not any(other_database(title, "etl_app_bench") for title in ours)
    assert not other_database(other, None)


def test_a_second_benchmark_on_the_same_scratch_services_stops_at_once(tmp_path):
    """Two runs on one database and Redis would drop each other's data: the second is refused,
    naming the first, and may run once the first is done."""
    import subprocess

    from bench import env

    db, rd = f"postgresql://x/bench-{tmp_path.name}", "redis://x/12"
    with env.exclusive(db, rd):
        other = subprocess.run(
            [sys.executable, "-c", f"from bench import env\nwith env.exclusive({db!r}, {rd!r}): pass"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert other.returncode != 0 and f"another benchmark (pid {os.getpid()}) is using" in other.stderr
    again = subprocess.run(
        [sys.executable, "-c", f"from bench import env\nwith env.exclusive({db!r}, {rd!r}): pass"],
        cwd=ROOT,
        timeout=60,
    )
    assert again.returncode == 0


def test_one_run_of_the_bench_takes_memory_from_100k_to_1m_records_beside_the_ratios():
    from bench.cli import parse_args

    full = parse_args([])
    assert full.soak == 1_000_000 and "soak" in full.phases
    assert {"raw", "batch", "single", "noop", "upload"} <= set(full.phases)
    assert "hostile" not in full.phases
    assert parse_args(["--quick"]).soak == 20_000
    alone = parse_args(["--soak", "300000"])
    assert (alone.phases, alone.soak) == (["soak"], 300_000)
    chosen = parse_args(["--only", "batch,soak", "--soak", "500"])
    assert (chosen.phases, chosen.soak) == (["batch", "soak"], 500)
    assert "soak" not in parse_args(["--only", "raw,batch"]).phases


def test_once_every_request_is_answered_the_settle_is_polled_finely(monkeypatch):
    """The moment the last record settles is known within 50 ms, not within the phase's interval."""
    import threading
    import types

    from bench import phases

    producer = threading.Thread(target=lambda: None)
    producer.start()
    producer.join()
    slept: list[float] = []
    monkeypatch.setattr(phases.time, "sleep", slept.append)
    left = iter([3, 2, 1, 0])
    ctx = types.SimpleNamespace(stall_seconds=60)
    phases.wait_for(ctx, lambda: next(left), 3, "settled", producer, interval=0.25)
    assert slept == [phases.TAIL_INTERVAL] * 3 and phases.TAIL_INTERVAL <= 0.05
