"""The ``jobs`` phase: the scheduled jobs over a month of data seeded straight into the tables.

Seeds ``sessions`` sessions (default 1,000,000) spread evenly over the 30 UTC days before today,
with their tutors (one per 500 sessions), students (one per 20) and feedback on every other
session, in set-based SQL (``generate_series``, not through the API). Each stored record has its
raw record, as the pipeline leaves them: persisted, received a few minutes to two hours after
its event, in ingestions of 1,000 records that also refused one record each; one session in a
thousand is dead-lettered ``missing_parent`` instead of stored. Then it times, over the 30
days: the daily-quality and tutor-rollups functions in one transaction each (first run, then a
re-run that finds nothing to change), and every registered job through the runner (its lock and
``job_runs`` row included) with the same window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bench.phases import Context
from bench.progress import say
from etl_app.config import Settings
from etl_app.db import make_engine
from etl_app.dead_letters.causes import normalise
from etl_app.jobs.context import JobContext, Window

DAYS = 30
SESSIONS_PER_TUTOR = 500
SESSIONS_PER_STUDENT = 20
PER_INGESTION = 1_000

# Shared by every seeded table: one ingestion per 1,000 records of a type, lineage at the event.
_INGESTIONS = f"""
INSERT INTO ingestions (id, record_type, source, accepted, rejected, created_at, finished_at)
SELECT md5(CAST(:t AS text) || n)::uuid, :t, 'batch', {PER_INGESTION}, 1,
       :base + (n * {PER_INGESTION}) * :step, :base + (n * {PER_INGESTION}) * :step
FROM generate_series(0, (:n - 1) / {PER_INGESTION}) AS n
"""
# ... and its one refused record, kept in rejections as the API keeps it
_REJECTIONS = f"""
INSERT INTO rejections (ingestion_id, record_type, position, raw, errors, created_at)
SELECT md5(CAST(:t AS text) || n)::uuid, :t, 0, '{{}}'::jsonb,
       jsonb_build_object('duration_minutes', jsonb_build_array('Must be between 5 and 480.')),
       :base + (n * {PER_INGESTION}) * :step
FROM generate_series(0, (:n - 1) / {PER_INGESTION}) AS n
"""

_SEED = {
    "tutors": """
        INSERT INTO tutors (tutor_id, name, email, age, subjects, onboarding_date, status, updated_at,
            tenure_days, is_new_tutor, experience_level, subject_count, is_active_today,
            ingestion_id, received_at, enriched_at, persisted_at, schema_version, source)
        SELECT 'bt-' || n, 'Tutor ' || n, 'tutor' || n || '@example.org',
               CASE WHEN n % 3 = 0 THEN NULL ELSE 25 + n % 40 END, ARRAY['Math'], DATE '2024-01-01', 'active',
               :base, 400, false, 'senior', 1, false,
               md5('tutors' || n / {per})::uuid, :base, :base, :base, 1, 'batch'
        FROM generate_series(0, :n - 1) AS n""",
    "students": """
        INSERT INTO students (student_id, name, grade_level, ingestion_id, received_at, enriched_at, persisted_at,
            schema_version, source)
        SELECT 'bs-' || n, 'Student ' || n, CASE WHEN n % 4 = 0 THEN NULL ELSE 1 + n % 12 END,
               md5('students' || n / {per})::uuid, :base, :base, :base, 1, 'batch'
        FROM generate_series(0, :n - 1) AS n""",
    "sessions": """
        INSERT INTO sessions (session_id, tutor_id, student_id, session_number, is_first_session, scheduled_start,
            actual_start, duration_minutes, subject, session_type, tutor_initiated_reschedule, no_show,
            late_start_minutes, engagement_score, learning_objectives_met, technical_issues, is_weekend,
            time_of_day, is_late_start, actual_duration_minutes, week_of_year, month_of_year,
            ingestion_id, received_at, enriched_at, persisted_at, schema_version, source)
        SELECT 'bx-' || n, 'bt-' || n % :tutors, 'bs-' || n % :students, 1 + n % 10, n % 10 = 0, start,
               CASE WHEN no_show THEN NULL ELSE start + (n % 13) * interval '1 minute' END, 60, 'Math', 'regular',
               n % 17 = 0, no_show, CASE WHEN no_show THEN NULL ELSE n % 13 END,
               CASE WHEN n % 5 = 0 THEN NULL ELSE (n % 101) / 100.0 END, NULL, n % 23 = 0,
               extract(isodow FROM start) >= 6, 'afternoon', NOT no_show AND n % 13 > 5,
               CASE WHEN no_show THEN 0 ELSE 60 - n % 13 END, extract(week FROM start), extract(month FROM start),
               md5('sessions' || n / {per})::uuid, received, received, received, 1, 'batch'
        FROM (SELECT n, :base + n * :step AS start, :base + n * :step + (n % 7200) * interval '1 second'
                         + interval '5 minutes' AS received, n % 11 = 0 AS no_show
              FROM generate_series(0, :n - 1) AS n) g
        WHERE n % 1000 <> 999""",
    "feedback": """
        INSERT INTO feedback (feedback_id, session_id, student_id, tutor_id, overall_rating, communication_rating,
            submitted_at, is_positive, is_poor, has_text_feedback, feedback_delay_hours,
            ingestion_id, received_at, enriched_at, persisted_at, schema_version, source)
        SELECT 'bf-' || n, 'bx-' || n, 'bs-' || n % :students, 'bt-' || n % :tutors, 1 + n % 5,
               CASE WHEN n % 3 = 0 THEN NULL ELSE 1 + n % 4 END, start + interval '2 hours',
               1 + n % 5 >= 4, 1 + n % 5 < 3, false, 1.0,
               md5('feedback' || n / {per})::uuid, start + interval '2 hours 10 minutes',
               start + interval '2 hours 10 minutes', start + interval '2 hours 10 minutes', 1, 'batch'
        FROM (SELECT n, :base + n * :step AS start FROM generate_series(0, :n - 1, 2) AS n) g
        WHERE n % 1000 <> 999""",
}

# The raw record of every stored row (its payload as received), and the dead session of each 1,000.
_RAW = {
    "tutors": """
        SELECT tutor_id, jsonb_strip_nulls(jsonb_build_object('tutor_id', tutor_id, 'name', name, 'email', email,
               'age', age, 'subjects', to_jsonb(subjects), 'onboarding_date', onboarding_date, 'status', status)),
               ingestion_id, received_at, 'persisted' FROM tutors WHERE tutor_id LIKE 'bt-%'""",
    "students": """
        SELECT student_id, jsonb_strip_nulls(jsonb_build_object('student_id', student_id, 'name', name,
               'grade_level', grade_level)), ingestion_id, received_at, 'persisted'
        FROM students WHERE student_id LIKE 'bs-%'""",
    "sessions": """
        SELECT session_id, jsonb_strip_nulls(jsonb_build_object('session_id', session_id, 'tutor_id', tutor_id,
               'student_id', student_id, 'session_number', session_number, 'scheduled_start', scheduled_start,
               'actual_start', actual_start, 'duration_minutes', duration_minutes, 'subject', subject,
               'session_type', session_type, 'no_show', no_show, 'engagement_score', engagement_score,
               'technical_issues', technical_issues)), ingestion_id, received_at, 'persisted'
        FROM sessions WHERE session_id LIKE 'bx-%'
        UNION ALL
        SELECT 'bx-' || n, jsonb_build_object('session_id', 'bx-' || n, 'tutor_id', 'bt-missing',
               'student_id', 'bs-0', 'session_number', 1, 'scheduled_start', :base + n * :step,
               'duration_minutes', 60, 'subject', 'Math', 'session_type', 'regular'),
               md5('sessions' || n / {per})::uuid, :base + n * :step + interval '5 minutes', 'dead'
        FROM generate_series(999, :n - 1, 1000) AS n""",
    "feedback": """
        SELECT feedback_id, jsonb_strip_nulls(jsonb_build_object('feedback_id', feedback_id, 'session_id', session_id,
               'student_id', student_id, 'tutor_id', tutor_id, 'overall_rating', overall_rating,
               'communication_rating', communication_rating, 'submitted_at', submitted_at)),
               ingestion_id, received_at, 'persisted'
        FROM feedback WHERE feedback_id LIKE 'bf-%'""",
}

_DEAD_ERROR = "parent tutors:bt-missing is not stored"
_DEAD_LETTERS = """
INSERT INTO dead_letters (raw_record_id, ingestion_id, record_type, natural_key, payload, error_type, error,
    cause, task_name, attempts, status)
SELECT id, ingestion_id, record_type, natural_key, payload, 'missing_parent', :error, :cause, 'etl.enrich', 7, 'open'
FROM raw_records WHERE status = 'dead' AND natural_key LIKE 'bx-%'
"""


def seed(engine: sa.Engine, sessions: int) -> dict[str, Any]:
    """Seed the tables (see the module docstring); returns the counts, the seconds it took and the
    window of days the sessions cover."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    base = today - timedelta(days=DAYS)
    counts = {
        "tutors": max(1, sessions // SESSIONS_PER_TUTOR),
        "students": max(1, sessions // SESSIONS_PER_STUDENT),
        "sessions": sessions,
        "feedback": (sessions + 1) // 2,
    }
    step = timedelta(days=DAYS) / sessions
    started = time.perf_counter()
    for record_type, n in counts.items():
        # tutors and students: one row each; sessions and feedback: n runs over the sessions
        params = {"t": record_type, "n": n if record_type in ("tutors", "students") else sessions, "base": base,
                  "step": step, "tutors": counts["tutors"], "students": counts["students"]}  # fmt: skip
        say(f"  seeding {n:,} {record_type} with their raw records and ingestions")
        with engine.begin() as conn:
            conn.execute(sa.text(_INGESTIONS), params)
            conn.execute(sa.text(_REJECTIONS), params)
            conn.execute(sa.text(_SEED[record_type].format(per=PER_INGESTION)), params)
            conn.execute(
                sa.text(
                    "INSERT INTO raw_records (natural_key, payload, ingestion_id, received_at, status, record_type, "
                    "updated_at) SELECT s.*, :t, s.received_at "
                    f"FROM ({_RAW[record_type].format(per=PER_INGESTION)}) AS s(natural_key, payload, ingestion_id, "
                    "received_at, status)"
                ),
                params,
            )
    with engine.begin() as conn:
        conn.execute(sa.text(_DEAD_LETTERS), {"error": _DEAD_ERROR, "cause": normalise(_DEAD_ERROR)})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    seconds = time.perf_counter() - started
    last = (today - timedelta(days=1)).date()
    return {"counts": counts, "seed_seconds": round(seconds, 1), "window": Window(base.date(), last)}


def _time_function(engine: sa.Engine, function: Callable[[JobContext], int], window: Window) -> tuple[float, int]:
    with engine.connect() as conn:
        ctx = JobContext(conn, window, Settings(), datetime.now(UTC), conn.commit)
        started = time.perf_counter()
        rows = function(ctx)
        conn.commit()
        return time.perf_counter() - started, rows


def run_jobs(ctx: Context, sessions: int) -> dict[str, Any]:
    from etl_app.jobs.rollups import run_tutor_rollups
    from etl_app.quality.daily import run_daily_quality

    engine = make_engine(ctx.database_url, pool_size=1, application_name="bench-jobs")
    try:
        seeded = seed(engine, sessions)
        window = seeded.pop("window")
        result: dict[str, Any] = {"records": sessions, **seeded, "window": [str(window.start), str(window.end)]}
        result["jobs"] = {}
        for name, function in (("daily-quality", run_daily_quality), ("tutor-rollups", run_tutor_rollups)):
            first, rows = _time_function(engine, function, window)
            again, rows_again = _time_function(engine, function, window)
            result["jobs"][name] = {"seconds": round(first, 2), "rows": rows,
                                    "rerun_seconds": round(again, 2), "rerun_rows": rows_again}  # fmt: skip
            say(f"  {name}: {first:.2f} s ({rows:,} rows); again {again:.2f} s ({rows_again:,} rows changed)")
        result["runner"] = _through_the_runner(engine, window)
    finally:
        engine.dispose()
    return result


def _through_the_runner(engine: sa.Engine, window: Window) -> dict[str, Any]:
    """Every registered job that runs on an engine, through the runner (lock and job_runs)."""
    try:
        from etl_app.jobs.registry import JOBS
        from etl_app.jobs.runner import run_job
    except ImportError:  # the registry is not there: the two functions were timed
        return {}
    out: dict[str, Any] = {}
    for name, job in JOBS.items():
        if job.needs_tools:
            continue
        started = time.perf_counter()
        outcome = run_job(engine, name, window if job.takes_window else None, trigger="cli", settings=Settings())
        seconds = time.perf_counter() - started
        out[name] = {"seconds": round(seconds, 2), "rows": outcome.rows, "status": outcome.status}
        say(f"  runner: {name}: {seconds:.2f} s, {outcome.status}, {outcome.rows} rows")
    return out
