"""The single-record and no-op phases against the Procfile's processes, on a few records: each
runs to its end, and the report states single ÷ no-op and the CPU per record of both.

No timing is asserted here; `make bench` reports the figures.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # bench/ is a folder of the repository, not an installed package
    sys.path.insert(0, ROOT)

from bench import app_phases, cli, report  # noqa: E402
from bench.phases import Context  # noqa: E402
from bench.procs import Processes, start_app  # noqa: E402
from bench.rss import Sampler  # noqa: E402

pytestmark = pytest.mark.slow


def _raw_records(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM raw_records")).scalar_one()


def test_single_and_noop_phases_run_and_the_report_states_their_ratio(
    database_url, api_redis_url, broker_prefix, engine, tmp_path
):
    admin, submit = "bench-" + secrets.token_urlsafe(8), "bench-ingest-" + secrets.token_urlsafe(8)
    env = cli._app_env(database_url, api_redis_url, f"{admin},{submit}:ingest", tmp_path)
    procs = Processes(tmp_path, {**env, "ETL_BROKER_KEY_PREFIX": broker_prefix})
    sampler = Sampler().start()
    ctx = Context(database_url, api_redis_url, admin, procs, sampler, 7, 60, tmp_path, submit_key=submit)
    try:
        ctx.app, ctx.port = start_app(procs)
        single = app_phases.run_single(ctx, 30)
        before = _raw_records(engine)
        noop = app_phases.run_noop(ctx, 30)
        after = _raw_records(engine)
    finally:
        procs.stop_all()
        sampler.stop()

    assert single["statuses"] == {"received": 0, "persisted": 30, "dead": 0}
    assert (noop["requests"], noop["accepted"], noop["failed"]) == (30, 30, 0)
    assert after == before  # the no-op endpoint stored nothing
    assert single["connections"] == noop["connections"] == "new for each request"
    results = report.derived({"single": single, "noop": noop})
    assert results["targets"]["single_over_noop"]["value"] is not None
    assert results["targets"]["api_p99_ms"]["value"] is not None
    assert set(results["cpu_us_per_record"]) == {"single", "noop"}
    assert results["cpu_us_per_record"]["single"]["web"] > 0 and results["cpu_us_per_record"]["noop"]["web"] > 0
    assert results["cpu_us_per_record"]["single"]["bench client"] > 0


def test_the_single_phase_with_idempotency_keys_sends_a_key_of_its_own_with_each_request(
    database_url, api_redis_url, broker_prefix, engine, tmp_path
):
    submit = "bench-ingest-" + secrets.token_urlsafe(8)
    env = cli._app_env(database_url, api_redis_url, f"{submit}:ingest", tmp_path)
    procs = Processes(tmp_path, {**env, "ETL_BROKER_KEY_PREFIX": broker_prefix})
    sampler = Sampler().start()
    ctx = Context(database_url, api_redis_url, submit, procs, sampler, 8, 60, tmp_path, submit_key=submit)
    with engine.connect() as conn:
        since = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    try:
        ctx.app, ctx.port = start_app(procs)
        single = app_phases.run_single(ctx, 20, idempotency_keys=True)
    finally:
        procs.stop_all()
        sampler.stop()

    assert single["statuses"] == {"received": 0, "persisted": 20, "dead": 0} and single["idempotency_keys"]
    with engine.connect() as conn:
        keys = conn.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT k.key) FROM idempotency_keys k JOIN ingestions i "
                "ON i.id = k.ingestion_id WHERE i.source = 'api' AND i.record_type = 'sessions' AND i.created_at >= :s"
            ),
            {"s": since},
        ).one()
    assert tuple(keys) == (20, 20)
