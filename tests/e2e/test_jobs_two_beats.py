"""Two `celery beat` processes started by mistake, both scheduling `retention` every 2 seconds, and
a real worker running what they send: the job's lock lets one run at a time, the others are
recorded skipped, and every payload is dropped exactly once."""

from __future__ import annotations

from itertools import pairwise

import pytest
import sqlalchemy as sa

from etl_app.config import Settings
from etl_app.jobs.runner import run_job

from tests.helpers.dead_letters import land
from tests.helpers.payloads import student
from tests.helpers.procs import running_stack, wait_until
from tests.helpers.support import redis_db

pytestmark = pytest.mark.slow


def test_two_beats_never_run_a_job_twice_at_once(database_url, engine, tmp_path, unique):
    settings = Settings(database_url=database_url)
    run_job(engine, "retention", trigger="cli", settings=settings)  # what earlier tests left
    accepted = land(engine, "students", [student(f"{unique}-{i}") for i in range(20)])
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE raw_records SET updated_at = now() - interval '31 days' WHERE id = ANY(:ids)"),
            {"ids": accepted.ids},
        )
        since = conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM job_runs")).scalar()

    def runs() -> list[sa.Row]:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT * FROM job_runs WHERE job = 'retention' AND id > :since ORDER BY started_at, id"),
                {"since": since},
            ).all()

    env = {"ETL_SCHEDULE_RETENTION": "2", "ETL_SWEEP_INTERVAL_SECONDS": "3600"}
    with running_stack(database_url, redis_db(15), tmp_path, **env) as stack:
        stack.worker(concurrency=4)
        with engine.connect() as blocker:
            # the first run to take the lock waits on this table lock, holding the job's lock
            blocker.execute(sa.text("LOCK TABLE raw_records IN EXCLUSIVE MODE"))
            stack.beat(**env)
            stack.beat(**env)
            wait_until(
                lambda: {"running", "skipped"} <= {r.status for r in runs()},
                60,
                what="one run holding the lock while another is skipped",
            )
            blocker.rollback()
        wait_until(lambda: sum(r.status == "succeeded" for r in runs()) >= 3, 60, what="three runs to succeed")
        stack.stop()

    done = runs()
    assert all(r.trigger == "beat" for r in done)
    assert {r.status for r in done} <= {"succeeded", "skipped"}, [(r.status, r.error) for r in done]
    skipped = [r for r in done if r.status == "skipped"]
    assert skipped and all("holds its lock" in r.error for r in skipped)
    worked = [r for r in done if r.status == "succeeded"]
    for earlier, later in pairwise(worked):
        assert earlier.finished_at <= later.started_at, (earlier, later)  # never two at once
    # each payload dropped once, by one run: the rows of the runs add up to them exactly
    assert sum(r.rows for r in worked) == len(accepted.ids)
    with engine.connect() as conn:
        dropped = conn.execute(
            sa.text("SELECT count(*) FROM raw_records WHERE id = ANY(:ids) AND payload IS NULL"), {"ids": accepted.ids}
        ).scalar()
    assert dropped == len(accepted.ids)
