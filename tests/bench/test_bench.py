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


def test_targets_are_reported_not_asserted():
    phases = {
        "raw": {"insert_rows_per_s": 100_000.0},
        "naive": {"records_per_s": 200.0},
        "batch": {"records_per_s": 20_000.0},
        "single": {"records_per_s": 500.0, "latency_ms": {"p99": 30.0}},
    }
    targets = report.derived(phases)["targets"]
    assert {k: (v["value"], v["met"]) for k, v in targets.items()} == {
        "batch_over_raw": (0.2, True),
        "single_over_naive": (2.5, False),
        "api_p99_ms": (30.0, False),
    }
    assert report.derived({})["targets"]["batch_over_raw"]["met"] is None


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
