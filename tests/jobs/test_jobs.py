"""Scheduled jobs on the real database: the runner (records, failures, the lock), re-enrich against
derive(), retention, and the CLI and API over them."""

from __future__ import annotations

import importlib.util
import json
import threading
import uuid
from datetime import UTC, date, datetime, time, timedelta

import pytest
import redis
import sqlalchemy as sa

from etl_app.clock import utcnow
from etl_app.config import Settings
from etl_app.jobs import registry
from etl_app.jobs.context import JobContext, Window
from etl_app.jobs.registry import JOBS, Job
from etl_app.jobs.runner import LOCK_NAMESPACE, lock_key, run_job
from etl_app.pipeline.persist import persist_chunk
from etl_app.record_types import get_registry
from etl_app.record_types.tutors import derive
from etl_app.runtime.build import build_runtime

from tests.helpers.dead_letters import dead, enriched_chunk, land, raw_row, store
from tests.helpers.payloads import student, tutor
from tests.helpers.procs import wait_until
from tests.helpers.support import fresh_database, redis_db


@pytest.fixture
def settings(database_url) -> Settings:
    return Settings(database_url=database_url, raw_retention_days=30, job_batch_size=2)


def runs_of(engine: sa.Engine, job: str) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM job_runs WHERE job = :j ORDER BY id"), {"j": job}).all()


def age(engine: sa.Engine, raw_ids: list[int], days: float) -> None:
    """Settled ``days`` ago (as if persisted or dead-lettered then)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE raw_records SET updated_at = now() - make_interval(secs => :s) WHERE id = ANY(:ids)"),
            {"s": days * 86400, "ids": raw_ids},
        )


# -- a test job, registered for one test ------------------------------------------------------


def explode(ctx: JobContext) -> int:
    """Writes, then fails: its write must not stay."""
    ctx.conn.execute(
        sa.text(
            "INSERT INTO job_runs (job, window_start, window_end, trigger, status) "
            "VALUES ('explode-scratch', current_date, current_date, 'cli', 'succeeded')"
        )
    )
    raise RuntimeError("the source is unreachable")


@pytest.fixture
def failing_job(monkeypatch) -> str:
    name = "explode"
    monkeypatch.setitem(
        JOBS, name, Job(name, f"{__name__}:explode", "etl.beat.explode", registry.today_only, "fails on purpose")
    )
    return name


# -- the runner -------------------------------------------------------------------------------


def test_a_run_is_recorded_with_its_window_rows_and_status(engine, settings, unique):
    accepted = land(engine, "students", [student(f"{unique}-{i}") for i in range(3)])
    age(engine, accepted.ids, 31)
    outcome = run_job(engine, "retention", trigger="cli", settings=settings)
    assert outcome.status == "succeeded" and outcome.rows >= 3
    run = runs_of(engine, "retention")[-1]
    today = datetime.now(UTC).date()
    assert (run.id, run.status, run.trigger, run.rows, run.error) == (
        outcome.run_id,
        "succeeded",
        "cli",
        outcome.rows,
        None,
    )
    assert (run.window_start, run.window_end) == (today, today)
    assert run.started_at <= run.finished_at


def test_a_failing_job_records_its_error_and_rolls_back_its_work(engine, settings, failing_job):
    outcome = run_job(engine, failing_job, trigger="cli", settings=settings)
    assert outcome.status == "failed"
    run = runs_of(engine, failing_job)[-1]
    assert run.status == "failed" and run.rows is None and run.finished_at is not None
    assert run.error == "RuntimeError: the source is unreachable"
    assert runs_of(engine, "explode-scratch") == []
    # the lock was released: the next run runs (and fails) again rather than being skipped
    assert run_job(engine, failing_job, trigger="cli", settings=settings).status == "failed"


def test_a_run_left_running_by_a_lost_process_is_closed_by_the_next_one(engine, settings, failing_job):
    with engine.begin() as conn:
        lost = conn.execute(
            sa.text(
                "INSERT INTO job_runs (job, window_start, window_end, trigger, status) "
                "VALUES (:j, current_date, current_date, 'beat', 'running') RETURNING id"
            ),
            {"j": failing_job},
        ).scalar()
    run_job(engine, failing_job, trigger="cli", settings=settings)
    row = next(r for r in runs_of(engine, failing_job) if r.id == lost)
    assert row.status == "failed" and row.error.startswith("abandoned") and row.finished_at is not None


def test_two_runs_at_once_one_works_the_other_is_skipped(engine, settings, unique):
    """The first run holds the lock while it waits on a table lock the test holds; the second,
    started meanwhile, is recorded skipped at once and changes nothing; the payloads are dropped
    once, by the first."""
    accepted = land(engine, "students", [student(f"{unique}-{i}") for i in range(5)])
    age(engine, accepted.ids, 40)
    outcomes = {}
    before = runs_of(engine, "retention")[-1].id if runs_of(engine, "retention") else 0
    with engine.connect() as blocker:
        blocker.execute(sa.text("LOCK TABLE raw_records IN EXCLUSIVE MODE"))
        first = threading.Thread(
            target=lambda: outcomes.setdefault("first", run_job(engine, "retention", trigger="api", settings=settings))
        )
        first.start()
        wait_until(
            lambda: any(r.status == "running" and r.id > before for r in runs_of(engine, "retention")),
            10,
            what="the first run to hold the lock",
        )
        second = run_job(engine, "retention", trigger="cli", settings=settings)
        assert second.status == "skipped" and first.is_alive()
        blocker.rollback()
    first.join(30)
    assert outcomes["first"].status == "succeeded" and outcomes["first"].rows >= 5
    assert second.error.startswith(f"another run of retention holds its lock (run {outcomes['first'].run_id}, api")
    runs = [r for r in runs_of(engine, "retention") if r.id > before]
    assert sorted((r.trigger, r.status) for r in runs) == [("api", "succeeded"), ("cli", "skipped")]
    dropped = {raw_row(engine, i).payload_dropped_at for i in accepted.ids}
    assert len(dropped) == 1 and None not in dropped


def test_the_sweeper_records_only_runs_that_re_sent_records(broker_prefix):
    # A database of its own: in the run's shared one, another test's record could come of age for
    # the sweeper between the two runs below, and the idle run would rightly re-send it.
    with fresh_database(f"sweeper_{uuid.uuid4().hex[:8]}") as own_database:
        _sweeper_runs(own_database, broker_prefix)


def _sweeper_runs(database_url: str, broker_prefix: str) -> None:
    settings = Settings(
        database_url=database_url, redis_url=redis_db(14), broker_url=redis_db(14), broker_key_prefix=broker_prefix
    )
    runtime = build_runtime(settings, pool_size=2, with_relay=False)
    engine = runtime.engine
    try:
        before = len(runs_of(engine, "outbox-sweeper"))
        assert before == 0
        accepted = store(engine, "students", [student("sweep-me")])
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE raw_records SET enqueued_at = now() - interval '1 hour' WHERE id = ANY(:ids)"),
                {"ids": accepted.ids},
            )
        swept = run_job(runtime.engine, "outbox-sweeper", settings=settings, tools=runtime.job_tools)
        assert swept.status == "succeeded" and swept.rows >= 1 and swept.run_id is not None
        idle = run_job(runtime.engine, "outbox-sweeper", settings=settings, tools=runtime.job_tools)
        assert idle.status == "succeeded" and idle.rows == 0 and idle.run_id is None
        assert swept.rows == 1  # the one record of this database
        runs = runs_of(engine, "outbox-sweeper")[before:]
        assert [(r.id, r.status, r.rows) for r in runs] == [(swept.run_id, "succeeded", swept.rows)]
        assert runs[0].started_at <= runs[0].finished_at
    finally:
        runtime.engine.dispose()


# -- re-enrich --------------------------------------------------------------------------------

DERIVED = ("tenure_days", "is_new_tutor", "experience_level", "is_active_today")


def test_re_enrich_gives_what_derive_gives_on_every_boundary(engine, settings, unique):
    as_of = utcnow()
    today = as_of.date()
    midnight = datetime.combine(today, time(), UTC)
    # tenure on each side of 30 / 90 / 365 days; updated_at on each side of the as-of UTC day,
    # one of them written with an offset whose local date differs from its UTC date
    cases = {
        "t0": (0, midnight),
        "t29": (29, midnight - timedelta(microseconds=1)),
        "t30": (30, as_of),
        "t89": (89, midnight + timedelta(hours=23, minutes=59, seconds=59)),
        "t90": (90, midnight - timedelta(days=3)),
        "t364": (364, "{today}T01:30:00+02:00"),  # 23:30 UTC the day before
        "t365": (365, "{yesterday}T23:30:00-02:00"),  # 01:30 UTC today
        "t1000": (1000, midnight - timedelta(days=400)),
    }
    payloads = {}
    for suffix, (tenure, updated) in cases.items():
        onboarding = today - timedelta(days=tenure)
        if isinstance(updated, str):
            updated = updated.format(today=today, yesterday=today - timedelta(days=1))
        else:
            updated = updated.isoformat()
        payloads[f"{unique}-{suffix}"] = tutor(
            f"{unique}-{suffix}", onboarding_date=onboarding.isoformat(), updated_at=updated
        )
    for payload in payloads.values():
        # received the day it was onboarded: derived then, stale now (a tenure of 0)
        onboarded = datetime.combine(date.fromisoformat(payload["onboarding_date"]), time(12), UTC)
        accepted = store(engine, "tutors", [payload], received_at=min(onboarded, as_of))
        with engine.begin() as conn:
            persist_chunk(conn, get_registry()["tutors"], enriched_chunk(engine, "tutors", accepted.ids)["items"])

    outcome = run_job(engine, "re-enrich", trigger="cli", settings=settings, now=as_of)
    assert outcome.status == "succeeded" and outcome.rows >= 6  # every stale one, in batches of 2
    rt = get_registry()["tutors"]
    with engine.connect() as conn:
        rows = {
            r.tutor_id: r
            for r in conn.execute(
                sa.text(f"SELECT tutor_id, enriched_at, {', '.join(DERIVED)} FROM tutors WHERE tutor_id LIKE :p"),
                {"p": f"{unique}-%"},
            )
        }
    assert set(rows) == set(payloads)
    for key, payload in payloads.items():
        data, errors = rt.validate(payload, as_of)
        assert not errors, errors
        expected = derive(data, as_of, {})
        assert {f: getattr(rows[key], f) for f in DERIVED} == {f: expected[f] for f in DERIVED}, key
    assert rows[f"{unique}-t29"].is_active_today is False and rows[f"{unique}-t0"].is_active_today is True
    assert rows[f"{unique}-t364"].is_active_today is False and rows[f"{unique}-t365"].is_active_today is True
    assert [rows[f"{unique}-t{n}"].experience_level for n in (89, 90, 364, 365)] == ["junior", "mid", "mid", "senior"]
    # the same as-of again: nothing left to change
    assert run_job(engine, "re-enrich", trigger="cli", settings=settings, now=as_of).rows == 0


# -- retention --------------------------------------------------------------------------------


def test_retention_drops_only_old_persisted_payloads_and_keeps_dead_letters(engine, settings, unique):
    old = land(engine, "students", [student(f"{unique}-old-{i}") for i in range(5)])
    recent = land(engine, "students", [student(f"{unique}-recent")])
    accepted_dead, (dead_letter_id,) = dead(engine, "students", [student(f"{unique}-dead")])
    received = store(engine, "students", [student(f"{unique}-received")])
    age(engine, old.ids + accepted_dead.ids + received.ids, 31)
    age(engine, recent.ids, 29)

    outcome = run_job(engine, "retention", trigger="cli", settings=settings)  # batches of 2
    assert outcome.status == "succeeded" and outcome.rows >= 5
    for raw_id in old.ids:
        raw = raw_row(engine, raw_id)
        assert raw.payload is None and raw.payload_dropped_at is not None and raw.status == "persisted"
    for raw_id in recent.ids + accepted_dead.ids + received.ids:
        raw = raw_row(engine, raw_id)
        assert raw.payload is not None and raw.payload_dropped_at is None, raw.status
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT payload FROM dead_letters WHERE id = :id"), {"id": dead_letter_id}).scalar()
    assert kept["student_id"] == f"{unique}-dead"
    assert run_job(engine, "retention", trigger="cli", settings=settings).rows == 0  # nothing left to drop


def test_a_record_whose_payload_was_dropped_is_still_served_and_its_replays_still_work(
    engine, settings, client, auth, unique
):
    old = land(engine, "students", [student(f"{unique}-old")])
    accepted_dead, (dead_letter_id,) = dead(engine, "students", [student(f"{unique}-dead")])
    age(engine, old.ids + accepted_dead.ids, 60)
    run_job(engine, "retention", trigger="cli", settings=settings)
    assert raw_row(engine, old.ids[0]).payload is None
    record = client.get(f"/api/v1/records/students/{unique}-old", headers=auth)
    assert record.status_code == 200, record.json
    assert record.json["lineage"]["raw_record_id"] == old.ids[0]
    replay = client.post(f"/api/v1/dead-letters/{dead_letter_id}/replay", headers=auth)
    assert replay.status_code == 202, replay.json
    assert raw_row(engine, accepted_dead.ids[0]).payload["student_id"] == f"{unique}-dead"


# -- the other jobs through the runner (their functions come with their own modules) ------------


@pytest.mark.parametrize("name", ["daily-quality", "tutor-rollups"])
def test_the_window_jobs_run_through_the_runner_with_their_default_window(engine, settings, name):
    module = JOBS[name].function.partition(":")[0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet")
    outcome = run_job(engine, name, trigger="cli", settings=settings)
    assert outcome.status == "succeeded", outcome.error
    today = datetime.now(UTC).date()
    expected = Window(today - timedelta(days=1), today) if name == "daily-quality" else Window.last_days(7, today)
    run = runs_of(engine, name)[-1]
    assert (run.window_start, run.window_end) == (expected.start, expected.end)


def test_windows_given_by_an_operator():
    rollups, retention = JOBS["tutor-rollups"], JOBS["retention"]
    assert registry.window_from(rollups, None, None) is None
    assert registry.window_from(rollups, "2026-01-01", "2026-01-31") == Window(date(2026, 1, 1), date(2026, 1, 31))
    assert registry.window_from(rollups, "2026-01-01", None, today=date(2026, 1, 3)) == Window(
        date(2026, 1, 1), date(2026, 1, 3)
    )
    for start, end in [("2026-02-01", "2026-01-01"), ("2026-13-01", None), ("yesterday", None), (None, "2026-01-01")]:
        with pytest.raises(registry.BadWindow):
            registry.window_from(rollups, start, end)
    with pytest.raises(registry.BadWindow, match="takes no window"):
        registry.window_from(retention, "2026-01-01", "2026-01-02")


# -- CLI --------------------------------------------------------------------------------------


@pytest.fixture
def cli(make_cli):
    return make_cli(ETL_JOB_BATCH_SIZE="2")


def test_cli_runs_a_job_and_lists_it_with_its_last_run(cli, engine, unique):
    accepted = land(engine, "students", [student(f"{unique}-{i}") for i in range(3)])
    age(engine, accepted.ids, 31)
    r = cli("jobs", "run", "retention")
    assert r.exit_code == 0, r.output
    run = runs_of(engine, "retention")[-1]
    assert f"retention run {run.id} " in r.output and "succeeded" in r.output and run.trigger == "cli"
    r = cli("jobs", "list")
    assert r.exit_code == 0, r.output
    line = next(line for line in r.output.splitlines() if " retention " in f" {line} ")
    assert "30 3 * * *" in line and "succeeded" in line
    for name in JOBS:
        assert name in r.output


def test_cli_refuses_unknown_jobs_and_bad_windows_and_fails_with_the_job(cli, failing_job):
    r = cli("jobs", "run", "nope")
    assert r.exit_code != 0 and "no job 'nope'" in r.output
    r = cli("jobs", "run", "retention", "--from", "2026-01-01")
    assert r.exit_code != 0 and "takes no window" in r.output
    r = cli("jobs", "run", "tutor-rollups", "--from", "2026-01-31", "--to", "2026-01-01")
    assert r.exit_code != 0 and "before it starts" in r.output
    r = cli("jobs", "run", failing_job)
    assert r.exit_code != 0 and "failed" in r.output and "the source is unreachable" in r.output


def test_cli_run_exits_non_zero_when_another_run_holds_the_lock(cli, engine):
    with engine.connect() as holder:
        assert holder.scalar(sa.select(sa.func.pg_try_advisory_lock(LOCK_NAMESPACE, lock_key("retention"))))
        r = cli("jobs", "run", "retention")
        holder.scalar(sa.select(sa.func.pg_advisory_unlock(LOCK_NAMESPACE, lock_key("retention"))))
        holder.commit()
    assert r.exit_code != 0 and "skipped" in r.output and "holds its lock" in r.output
    assert runs_of(engine, "retention")[-1].status == "skipped"


# -- API --------------------------------------------------------------------------------------


def test_api_lists_the_jobs_with_schedules_and_last_runs(client, auth, engine, settings):
    run_job(engine, "retention", trigger="cli", settings=settings)
    r = client.get("/api/v1/jobs", headers=auth)
    assert r.status_code == 200
    jobs = {job["name"]: job for job in r.json["jobs"]}
    assert set(jobs) == set(JOBS)
    assert (
        jobs["re-enrich"]["schedule"] == "30 2 * * *"
        and jobs["re-enrich"]["schedule_variable"] == "ETL_SCHEDULE_RE_ENRICH"
    )
    assert jobs["outbox-sweeper"]["task"] == "etl.beat.outbox-sweeper"
    last = jobs["retention"]["last_run"]
    assert last["status"] == "succeeded" and last["trigger"] == "cli" and last == jobs["retention"]["recent_runs"][0]
    assert client.get("/api/v1/jobs/retention", headers=auth).json["last_run"]["id"] == last["id"]
    assert client.get("/api/v1/jobs/nope", headers=auth).status_code == 404
    assert client.get("/api/v1/jobs").status_code == 401


def test_api_queues_a_run_on_the_jobs_queue(client, auth, api_redis_url, broker_prefix):
    r = client.post("/api/v1/jobs/tutor-rollups/run", json={"from": "2026-01-01", "to": "2026-01-07"}, headers=auth)
    assert r.status_code == 202, r.json
    assert r.json["window"] == {"from": "2026-01-01", "to": "2026-01-07"} and r.json["task_id"]
    r2 = client.post("/api/v1/jobs/retention/run", headers=auth)
    assert r2.status_code == 202 and r2.json["window"] is None
    queued = [json.loads(m) for m in redis.Redis.from_url(api_redis_url).lrange(f"{broker_prefix}jobs", 0, -1)]
    by_id = {m["headers"]["id"]: m["headers"] for m in queued}
    assert by_id[r.json["task_id"]]["task"] == "etl.beat.tutor-rollups"
    assert by_id[r2.json["task_id"]]["task"] == "etl.beat.retention"


def test_api_refuses_unknown_jobs_and_bad_dates(client, auth):
    assert client.post("/api/v1/jobs/nope/run", headers=auth).status_code == 404
    for body in ({"from": "2026-02-30"}, {"from": "2026-02-01", "to": "2026-01-01"}, {"to": "2026-01-01"}, {"day": 1}):
        r = client.post("/api/v1/jobs/tutor-rollups/run", json=body, headers=auth)
        assert r.status_code == 400, (body, r.json)
    r = client.post("/api/v1/jobs/re-enrich/run", json={"from": "2026-01-01"}, headers=auth)
    assert r.status_code == 400 and "takes no window" in r.json["message"]


def test_openapi_documents_the_jobs(client, auth):
    paths = client.get("/openapi.json", headers=auth).json["paths"]
    assert {"/api/v1/jobs", "/api/v1/jobs/{name}", "/api/v1/jobs/{name}/run"} <= set(paths)
