"""The ``ui`` phase: every operator page (``/ui/``) timed over a million records and 100,000 dead
letters (docs/operator-pages.md, "Speed").

Seeding, in set-based SQL (``generate_series``, not through the API), with keys ``ut-``, ``us-``,
``ux-``, ``uf-`` so that it sits beside what other phases left in the scratch database:

- ``records`` raw records (default 1,000,000): 60 % sessions, 25 % feedback, 10 % students, 5 %
  tutors, received over the last 30 days in ingestions of 300 records of one type (a few thousand
  ingestions, one in ten NDJSON, one in fifty an upload). Every record is ``persisted`` (with its
  row in the type's table, payload as received) but for the dead ones (``dead_letters`` of them,
  default 100,000, spread evenly over the ingestions) and half of each type's newest three
  ingestions, still ``received`` (in flight). One ingestion in four refused one to three records
  of its batch (table ``rejections``, the ingestion's ``rejected``).
- one dead letter per dead record, over 31 causes of the four types and six error types, a few
  large groups and a long tail (the message carries the record's key or numbers, so grouping has
  to normalise them); one in twenty discarded, the rest open.
- the settled ingestions' quality (:func:`etl_app.quality.settle.catch_up`, as the sweeper stores
  it); the daily-quality and tutor-rollups jobs over the 30 days, through the runner (their
  ``job_runs`` rows), after a month of hourly and daily ``job_runs`` history; then ``ANALYZE``.

Then a web process (the Procfile's, gunicorn with 2 workers) with an operator key: sign in through
the form (the CSRF token and cookie of ``GET /ui/signin``, then ``POST`` the key), and time each
page ``REQUESTS`` times, one request at a time: every GET route of the app's URL map under
``/ui/`` (read at run time, so pages added later are timed too): the navigation's pages, their
JSON (``/ui/api/...``) and the pages with parameters, filled from the seeded data (an ingestion,
a stored record, a dead letter, its group, a record type, a job). After a list page come its
older page (the keyset link in its HTML) and the list filtered to one record type (when a
``<select>`` of the page offers it); the polling JSON of the ingestions and of the dead-letter
groups gets the ids of a first page (the 25 newest ingestions, the 25 largest groups). A route
whose parameters cannot be filled is listed as skipped, as is a navigation page that does not
exist; an event stream is timed to its first event. ``python -m bench --only ui --ui-records N``
seeds N records (N/10 dead letters) instead; ``--quick``, 20,000.
"""

from __future__ import annotations

import html
import http.client
import re
import secrets
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa

from bench.phases import Context
from bench.procs import Proc, procfile, start_app, wait_http_ok
from bench.progress import say
from etl_app.db import make_engine
from etl_app.local.processes import free_port

DAYS = 30
PER_INGESTION = 300
REQUESTS = 5
REQUEST_TIMEOUT = 60.0
# Share of the records by type, with the prefix of their keys.
TYPES = {"sessions": (0.60, "ux-"), "feedback": (0.25, "uf-"), "students": (0.10, "us-"), "tutors": (0.05, "ut-")}
IN_FLIGHT_INGESTIONS = 3  # of each type, the newest: half their records still `received`

# The causes of the dead letters: (record type, error type, task, message). %1$s is the record's
# key, %2$s a number, %3$s a parent's key. The first causes of a type get the most dead letters.
CAUSES = (
    ("sessions", "missing_parent", "etl.enrich", "parent tutors:%3$s is not stored"),
    ("sessions", "validation", "etl.validate", "duration_minutes: Must be between 5 and 480 (got %2$s)."),
    ("sessions", "missing_parent", "etl.enrich", "parent students:us-missing-%2$s is not stored"),
    ("sessions", "enrichment", "etl.enrich", "could not derive time_of_day for %1$s: no timezone"),
    ("sessions", "validation", "etl.validate", "scheduled_start: Not a valid datetime."),
    ("sessions", "persistence", "etl.persist", "deadlock detected while storing %1$s"),
    ("sessions", "validation", "etl.validate", "engagement_score: Must be between 0 and 1."),
    ("sessions", "parent_mismatch", "etl.enrich", "session %1$s names tutor %3$s but its earlier version another"),
    ("sessions", "validation", "etl.validate", "subject: Must be one of: Math, Science, English (got 'Art %2$s')."),
    ("sessions", "persistence", "etl.persist", "numeric field overflow: late_start_minutes %2$s"),
    ("sessions", "internal", "etl.persist", "TypeError: unsupported operand type(s) in record %1$s"),
    ("sessions", "internal", "etl.validate", "worker lost while processing chunk %2$s"),
    ("sessions", "enrichment", "etl.enrich", "week_of_year out of range for %1$s"),
    ("feedback", "missing_parent", "etl.enrich", "parent sessions:ux-missing-%2$s is not stored"),
    ("feedback", "validation", "etl.validate", "overall_rating: Must be between 1 and 5 (got %2$s)."),
    ("feedback", "missing_parent", "etl.enrich", "parent tutors:%3$s is not stored"),
    ("feedback", "parent_mismatch", "etl.enrich", "feedback %1$s names tutor %3$s, its session another"),
    ("feedback", "validation", "etl.validate", "submitted_at: Not a valid datetime."),
    ("feedback", "validation", "etl.validate", "communication_rating: Not a valid integer."),
    ("feedback", "persistence", "etl.persist", "value too long for type text[] (%2$s items)"),
    ("feedback", "internal", "etl.persist", "KeyError: 'session_id' in %1$s"),
    ("students", "validation", "etl.validate", "grade_level: Must be between 1 and 12 (got %2$s)."),
    ("students", "validation", "etl.validate", "name: Shorter than minimum length 1."),
    ("students", "persistence", "etl.persist", "could not serialize access due to concurrent update of %1$s"),
    ("students", "internal", "etl.enrich", "ValueError: invalid literal for int() with base 10: '%2$s'"),
    ("tutors", "enrichment", "etl.enrich", "geocoder timed out after 10 s looking up tutor %1$s"),
    ("tutors", "validation", "etl.validate", "age: Must be between 18 and 100 (got %2$s)."),
    ("tutors", "validation", "etl.validate", "email: '%1$s@example' is not a valid email address."),
    ("tutors", "enrichment", "etl.enrich", "geocoder answered 503 for tutor %1$s"),
    ("tutors", "persistence", "etl.persist", "value too long for type character varying(%2$s)"),
    ("tutors", "internal", "etl.enrich", "KeyError: 'subjects' in record %1$s"),
)

# -- seeding ----------------------------------------------------------------------------------

# Per record n of a type: its ingestion (n / 300), received at its ingestion's moment, and status.
_RECORDS = """
SELECT n, n / {per} AS ing,
       :now - ((:n - 1) / {per} - n / {per}) * :ing_step - interval '2 minutes' AS received,
       CASE WHEN (n * 7919) % 1000 < :dead_permille THEN 'dead'
            WHEN n / {per} >= (:n - 1) / {per} - {in_flight} + 1 AND n % 2 = 0 THEN 'received'
            ELSE 'persisted' END AS status
FROM generate_series(0, CAST(:n AS bigint) - 1) AS n
"""

# The payload as received, by type (n, received, :tutors, :students, :sessions of the seed).
_PAYLOADS = {
    "tutors": """jsonb_build_object('tutor_id', 'ut-' || n, 'name', 'Tutor ' || n,
        'email', 'tutor' || n || '@example.org', 'age', 25 + n % 40,
        'subjects', jsonb_build_array((ARRAY['Math', 'Science', 'English'])[1 + n % 3]),
        'onboarding_date', DATE '2024-01-01' + CAST(n % 600 AS int), 'status', 'active',
        'location', 'City ' || n % 300)""",
    "students": """jsonb_build_object('student_id', 'us-' || n, 'name', 'Student ' || n, 'grade_level', 1 + n % 12,
        'enrolled_on', DATE '2025-09-01' + CAST(n % 90 AS int))""",
    "sessions": """jsonb_strip_nulls(jsonb_build_object('session_id', 'ux-' || n, 'tutor_id', 'ut-' || n % :tutors,
        'student_id', 'us-' || n % :students, 'session_number', 1 + n % 10,
        'scheduled_start', received - interval '1 hour' - (n % 48) * interval '1 hour',
        'actual_start', CASE WHEN n % 11 = 0 THEN NULL ELSE received - interval '1 hour'
                        - (n % 48) * interval '1 hour' + (n % 13) * interval '1 minute' END,
        'duration_minutes', 30 + 15 * (n % 5), 'subject', (ARRAY['Math', 'Science', 'English'])[1 + n % 3],
        'session_type', 'regular', 'no_show', n % 11 = 0, 'engagement_score', CASE WHEN n % 5 = 0 THEN NULL
                        ELSE (n % 101) / 100.0 END, 'technical_issues', n % 23 = 0))""",
    "feedback": """jsonb_build_object('feedback_id', 'uf-' || n, 'session_id', 'ux-' || (n * 2) % :sessions,
        'student_id', 'us-' || (n * 2) % :students, 'tutor_id', 'ut-' || (n * 2) % :tutors, 'overall_rating', 1 + n % 5,
        'communication_rating', 1 + n % 4, 'submitted_at', received - interval '10 minutes')""",
}

_RAW = """
INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, status, attempts, received_at,
    updated_at, enqueued_at)
SELECT md5('ui' || :t || ing)::uuid, :t, :prefix || n, {payload}, status,
       CASE WHEN status = 'dead' THEN 1 + n % 7 ELSE 1 END, received,
       received + CASE WHEN status = 'received' THEN interval '0' ELSE (1 + n % 300) * interval '1 second' END,
       received + interval '50 milliseconds'
FROM ({records}) AS r
"""

_INGESTIONS = """
INSERT INTO ingestions (id, record_type, source, accepted, rejected, created_at)
SELECT id, :t, CASE WHEN ing % 50 = 25 THEN 'upload' WHEN ing % 10 = 3 THEN 'ndjson' ELSE 'batch' END, accepted,
       CASE WHEN ing % 4 = 1 THEN 1 + ing % 3 ELSE 0 END, created_at
FROM (SELECT ingestion_id AS id, min(substr(natural_key, 4)::bigint) / {per} AS ing, count(*) AS accepted,
             min(received_at) AS created_at
      FROM raw_records WHERE record_type = :t AND natural_key LIKE :prefix || '%' GROUP BY ingestion_id) g
"""

_UPLOADS = """
INSERT INTO uploads (id, record_type, filename, format, size, sha256, chunk_bytes, status, rows_read, progress,
    created_at, parsed_at)
SELECT id, record_type, record_type || '-' || to_char(created_at, 'YYYYMMDD-HH24MI') || '.csv', 'csv',
       (accepted + rejected) * 180, encode(sha256(id::text::bytea), 'hex'), 1048576, 'parsed', accepted + rejected,
       1.0, created_at, created_at + interval '20 seconds'
FROM ingestions WHERE record_type = :t AND source = 'upload' AND id IN (
    SELECT DISTINCT ingestion_id FROM raw_records WHERE record_type = :t AND natural_key LIKE :prefix || '%')
"""

_REJECTIONS = {
    "tutors": ("age", "Must be between 18 and 100.", "jsonb_build_object('tutor_id', key, 'name', 'X', 'age', 7)"),
    "students": ("grade_level", "Must be between 1 and 12.",
                 "jsonb_build_object('student_id', key, 'grade_level', 19)"),
    "sessions": ("duration_minutes", "Must be between 5 and 480.",
                 "jsonb_build_object('session_id', key, 'tutor_id', 'ut-1', 'duration_minutes', 0)"),
    "feedback": ("overall_rating", "Must be between 1 and 5.",
                 "jsonb_build_object('feedback_id', key, 'overall_rating', 9)"),
}  # fmt: skip

_REJECTED = """
INSERT INTO rejections (ingestion_id, record_type, position, natural_key, raw, errors, created_at)
SELECT i.id, :t, {per} + k, key, {raw},
       jsonb_build_object(CAST(:field AS text), jsonb_build_array(CAST(:message AS text))), i.created_at
FROM ingestions i CROSS JOIN LATERAL generate_series(1, i.rejected) AS k
CROSS JOIN LATERAL (SELECT :prefix || 'bad-' || left(i.id::text, 8) || '-' || k AS key) AS x
WHERE i.record_type = :t AND i.rejected > 0 AND i.id IN (
    SELECT DISTINCT ingestion_id FROM raw_records WHERE record_type = :t AND natural_key LIKE :prefix || '%')
"""

# The stored rows, from the persisted raw records' payloads.
_STORED = {
    "tutors": """
        INSERT INTO tutors (tutor_id, name, email, age, location, subjects, onboarding_date, status, updated_at,
            tenure_days, is_new_tutor, experience_level, subject_count, is_active_today, ingestion_id,
            received_at, enriched_at, persisted_at, schema_version, source, raw_record_id)
        SELECT natural_key, p->>'name', p->>'email', (p->>'age')::int, p->>'location',
               ARRAY(SELECT jsonb_array_elements_text(p->'subjects')), (p->>'onboarding_date')::date, 'active',
               received_at, current_date - (p->>'onboarding_date')::date,
               current_date - (p->>'onboarding_date')::date < 90, 'senior', 1, id % 3 = 0,
               ingestion_id, received_at, updated_at, updated_at, 1, 'batch', id
        FROM (SELECT *, payload AS p FROM raw_records) r""",
    "students": """
        INSERT INTO students (student_id, name, grade_level, enrolled_on, ingestion_id, received_at, enriched_at,
            persisted_at, schema_version, source, raw_record_id)
        SELECT natural_key, p->>'name', (p->>'grade_level')::int, (p->>'enrolled_on')::date,
               ingestion_id, received_at, updated_at, updated_at, 1, 'batch', id
        FROM (SELECT *, payload AS p FROM raw_records) r""",
    "sessions": """
        INSERT INTO sessions (session_id, tutor_id, student_id, session_number, is_first_session, scheduled_start,
            actual_start, duration_minutes, subject, session_type, tutor_initiated_reschedule, no_show,
            late_start_minutes, engagement_score, technical_issues, is_weekend, time_of_day, is_late_start,
            actual_duration_minutes, week_of_year, month_of_year, ingestion_id, received_at, enriched_at,
            persisted_at, schema_version, source, raw_record_id)
        SELECT natural_key, p->>'tutor_id', p->>'student_id', (p->>'session_number')::int,
               (p->>'session_number')::int = 1, start, actual, (p->>'duration_minutes')::int, p->>'subject',
               p->>'session_type', id % 17 = 0, (p->>'no_show')::boolean,
               CAST(extract(epoch FROM actual - start) / 60 AS int), (p->>'engagement_score')::float,
               (p->>'technical_issues')::boolean, extract(isodow FROM start) >= 6,
               CASE WHEN extract(hour FROM start) < 12 THEN 'morning' WHEN extract(hour FROM start) < 17
                    THEN 'afternoon' ELSE 'evening' END,
               coalesce(actual - start > interval '5 minutes', false),
               CASE WHEN actual IS NULL THEN 0 ELSE (p->>'duration_minutes')::int END,
               extract(week FROM start), extract(month FROM start),
               ingestion_id, received_at, updated_at, updated_at, 1, 'batch', id
        FROM (SELECT *, payload AS p, (payload->>'scheduled_start')::timestamptz AS start,
                     (payload->>'actual_start')::timestamptz AS actual FROM raw_records) r""",
    "feedback": """
        INSERT INTO feedback (feedback_id, session_id, student_id, tutor_id, overall_rating, communication_rating,
            submitted_at, is_positive, is_poor, has_text_feedback, feedback_delay_hours, ingestion_id,
            received_at, enriched_at, persisted_at, schema_version, source, raw_record_id)
        SELECT natural_key, p->>'session_id', p->>'student_id', p->>'tutor_id', (p->>'overall_rating')::int,
               (p->>'communication_rating')::int, (p->>'submitted_at')::timestamptz,
               (p->>'overall_rating')::int >= 4, (p->>'overall_rating')::int < 3, false, 1.5,
               ingestion_id, received_at, updated_at, updated_at, 1, 'batch', id
        FROM (SELECT *, payload AS p FROM raw_records) r""",
}
_STORED_WHERE = " WHERE record_type = :t AND natural_key LIKE :prefix || '%' AND status = 'persisted'"

# One dead letter per dead raw record: its cause picked by a hash of the key, skewed to the first.
_DEAD_LETTERS = """
INSERT INTO dead_letters (raw_record_id, ingestion_id, record_type, natural_key, payload, error_type, error,
    task_name, attempts, status, first_failed_at, last_failed_at{cause_column})
SELECT r.id, r.ingestion_id, r.record_type, r.natural_key, r.payload, c.error_type,
       format(c.template, r.natural_key, n % 997, 'ut-missing-' || n % 500), c.task, r.attempts,
       CASE WHEN n % 20 = 7 THEN 'discarded' ELSE 'open' END,
       r.received_at + (1 + n % 600) * interval '1 second',
       r.received_at + (1 + n % 600) * interval '1 second' + (n % 5) * interval '1 minute'
       {cause_value}
FROM (SELECT *, substr(natural_key, 4)::bigint AS n FROM raw_records
      WHERE record_type = :t AND natural_key LIKE :prefix || '%' AND status = 'dead') r
JOIN (SELECT * FROM unnest(CAST(:error_types AS text[]), CAST(:templates AS text[]), CAST(:tasks AS text[]),
                           CAST(:causes AS text[])) WITH ORDINALITY AS c(error_type, template, task, cause, i)) c
  ON c.i = 1 + floor(:c * power(((r.n * 2654435761) % 1000003) / 1000003.0, 2))
"""

_JOB_HISTORY = """
INSERT INTO job_runs (job, window_start, window_end, trigger, status, started_at, finished_at, rows, error)
SELECT :job, CAST(at AS date) - 1, CAST(at AS date) - 1, 'beat',
       CASE WHEN k % 97 = 13 THEN 'failed' WHEN k % 89 = 5 THEN 'skipped' ELSE 'succeeded' END,
       at, at + (1 + k % 40) * interval '1 second', CASE WHEN k % 97 = 13 THEN NULL ELSE 100 + k % 5000 END,
       CASE WHEN k % 97 = 13 THEN 'canceling statement due to statement timeout' END
FROM generate_series(1, :runs) AS k, LATERAL (SELECT :start + k * :every AS at) a
"""


def sizes(records: int) -> dict[str, int]:
    """Raw records of each type: their sum is ``records``, each at least one ingestion's."""
    counts = {t: max(PER_INGESTION, int(records * share)) for t, (share, _) in TYPES.items()}
    counts["sessions"] = max(PER_INGESTION, counts["sessions"] + records - sum(counts.values()))
    return counts


def _message(template: str, prefix: str) -> str:
    """A message of this cause as PostgreSQL's ``format`` writes it (for its normalised cause)."""
    return template.replace("%1$s", f"{prefix}1234").replace("%2$s", "17").replace("%3$s", "ut-missing-4")


def _causes(record_type: str) -> list[tuple[str, str, str, str]]:
    """(error type, template, task, cause) of each cause of this type."""
    try:
        from etl_app.dead_letters.causes import normalise
    except ImportError:  # a version without grouping by cause
        normalise = str
    prefix = TYPES[record_type][1]
    return [(e, m, task, normalise(_message(m, prefix))) for t, e, task, m in CAUSES if t == record_type]


def _columns(conn: sa.Connection, table: str) -> set[str]:
    return set(
        conn.execute(
            sa.text("SELECT column_name FROM information_schema.columns WHERE table_name = :t"), {"t": table}
        ).scalars()
    )


def seed(engine: sa.Engine, records: int, dead_letters: int) -> dict[str, Any]:
    """Seed the tables (see the module docstring); returns what it wrote and the seconds each part took."""
    now = datetime.now(UTC).replace(microsecond=0)
    counts = sizes(records)
    dead_permille = max(1, round(1000 * dead_letters / records))
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with engine.connect() as conn:
        has_cause = "cause" in _columns(conn, "dead_letters")
    for record_type, n in counts.items():
        prefix = TYPES[record_type][1]
        ingestions = (n - 1) // PER_INGESTION + 1
        params = {"t": record_type, "prefix": prefix, "n": n, "now": now, "dead_permille": dead_permille,
                  "ing_step": timedelta(days=DAYS) / ingestions, "tutors": counts["tutors"],
                  "students": counts["students"], "sessions": counts["sessions"]}  # fmt: skip
        say(
            f"  seeding {n:,} {record_type} in {ingestions:,} ingestions: raw and stored rows, rejections, dead letters"
        )
        records_sql = _RECORDS.format(per=PER_INGESTION, in_flight=IN_FLIGHT_INGESTIONS)
        field, message, raw = _REJECTIONS[record_type]
        causes = _causes(record_type)
        with engine.begin() as conn:
            conn.execute(sa.text(_RAW.format(payload=_PAYLOADS[record_type], records=records_sql)), params)
            conn.execute(sa.text(_INGESTIONS.format(per=PER_INGESTION)), params)
            conn.execute(sa.text(_UPLOADS), params)
            conn.execute(
                sa.text(_REJECTED.format(per=PER_INGESTION, raw=raw)), {**params, "field": field, "message": message}
            )
            conn.execute(sa.text(_STORED[record_type] + _STORED_WHERE), params)
            conn.execute(
                sa.text(
                    _DEAD_LETTERS.format(
                        cause_column=", cause" if has_cause else "", cause_value=", c.cause" if has_cause else ""
                    )
                ),
                {"t": record_type, "prefix": prefix, "c": len(causes), "error_types": [c[0] for c in causes],
                 "templates": [c[1] for c in causes], "tasks": [c[2] for c in causes],
                 "causes": [c[3] for c in causes]},
            )  # fmt: skip
    timings["rows_seconds"] = round(time.perf_counter() - started, 1)

    say("  storing the settled ingestions' quality (as the sweeper's catch-up does)")
    began = time.perf_counter()
    from etl_app.quality.settle import catch_up
    from etl_app.record_types import get_registry

    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT count(*) FROM ingestions WHERE quality IS NULL")).scalar_one()
        measured = len(catch_up(conn, get_registry(), limit=total + 1))
    timings["quality_seconds"] = round(time.perf_counter() - began, 1)

    began = time.perf_counter()
    jobs = _jobs(engine, now)
    timings["jobs_seconds"] = round(time.perf_counter() - began, 1)

    say("  VACUUM ANALYZE")
    began = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    timings["analyze_seconds"] = round(time.perf_counter() - began, 1)
    timings["seed_seconds"] = round(time.perf_counter() - started, 1)

    with engine.connect() as conn:
        tally = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM raw_records WHERE natural_key ~ '^u[tsxf]-') AS raw_records, "
                "(SELECT count(*) FROM ingestions) AS ingestions, (SELECT count(*) FROM rejections) AS rejections, "
                "(SELECT count(*) FROM dead_letters) AS dead_letters, "
                "(SELECT count(DISTINCT (record_type, error_type, error)) FROM dead_letters) AS messages, "
                "(SELECT count(*) FROM job_runs) AS job_runs, (SELECT count(*) FROM daily_quality) AS daily_quality"
            )
        ).one()
        statuses = dict(
            conn.execute(
                sa.text("SELECT status, count(*) FROM raw_records WHERE natural_key ~ '^u[tsxf]-' GROUP BY status")
            ).all()
        )
        groups = None
        if has_cause:
            groups = conn.execute(sa.text("SELECT count(DISTINCT group_key) FROM dead_letters")).scalar_one()
    return {
        "by_type": counts,
        "statuses": statuses,
        **tally._asdict(),
        "dead_letter_groups": groups,
        "ingestions_measured": measured,
        "jobs": jobs,
        **timings,
    }


def _jobs(engine: sa.Engine, now: datetime) -> dict[str, Any]:
    """A month of job_runs history (hourly tutor-rollups, daily others), then the window's
    daily-quality and tutor-rollups through the runner."""
    from etl_app.config import Settings
    from etl_app.jobs.context import Window
    from etl_app.jobs.registry import JOBS
    from etl_app.jobs.runner import run_job

    start = now - timedelta(days=DAYS)
    with engine.begin() as conn:
        for job in JOBS:
            hourly = job in ("tutor-rollups", "lookup-refresh")
            every = timedelta(hours=1) if hourly else timedelta(days=1)
            conn.execute(
                sa.text(_JOB_HISTORY),
                {"job": job, "runs": DAYS * (24 if hourly else 1), "start": start, "every": every},
            )
    window = Window(start.date(), (now - timedelta(days=1)).date())
    out: dict[str, Any] = {}
    for name in ("daily-quality", "tutor-rollups"):
        if name not in JOBS:
            continue
        say(f"  running {name} over {window.start} to {window.end}")
        began = time.perf_counter()
        outcome = run_job(engine, name, window, trigger="cli", settings=Settings())
        out[name] = {"seconds": round(time.perf_counter() - began, 1), "rows": outcome.rows, "status": outcome.status}
    return out


# -- the pages --------------------------------------------------------------------------------


class Client:
    """One HTTP/1.1 connection to the web process with the ``/ui`` session cookie."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
        """(status, headers, body, seconds); an event stream is read to its first event."""
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        started = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # a connection the server closed while idle: once more on a new one
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        if response.getheader("Content-Type", "").startswith("text/event-stream"):
            data = response.readline()
            while data and not data.endswith(b"\n\n") and len(data) < 1 << 20:
                line = response.readline()
                if not line:
                    break
                data += line
                if line == b"\n":
                    break
            seconds = time.perf_counter() - started
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        else:
            data = response.read()
            seconds = time.perf_counter() - started
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, response, data, seconds

    def sign_in(self, key: str) -> None:
        status, _, body, _ = self.request("GET", "/ui/signin")
        match = re.search(rb'name="csrf_token"\s+value="([^"]+)"', body)
        if status != 200 or match is None:
            raise RuntimeError(f"GET /ui/signin answered {status} without a CSRF token")
        form = urlencode({"csrf_token": match.group(1).decode(), "key": key, "next": ""}).encode()
        status, response, body, _ = self.request(
            "POST", "/ui/signin", form, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        if status not in (302, 303) or "/ui/signin" in (response.getheader("Location") or "/ui/signin"):
            raise RuntimeError(f"signing in failed: {status} {body[:300]!r}")

    def close(self) -> None:
        self.conn.close()


def _samples(engine: sa.Engine) -> dict[str, Any]:
    """Values for the routes' parameters, from the seeded data."""
    with engine.connect() as conn:
        has_group = "group_key" in _columns(conn, "dead_letters")
        ingestion = conn.execute(
            sa.text(
                "SELECT i.id FROM ingestions i ORDER BY i.record_type = 'sessions' DESC, i.quality IS NOT NULL DESC, "
                "i.rejected > 0 DESC, EXISTS (SELECT 1 FROM dead_letters d WHERE d.ingestion_id = i.id) DESC, "
                "i.created_at DESC LIMIT 1"
            )
        ).scalar()
        record = conn.execute(
            sa.text("SELECT natural_key FROM raw_records WHERE record_type = 'sessions' AND status = 'persisted' "
                    "AND natural_key LIKE 'ux-%' ORDER BY id DESC LIMIT 1")
        ).scalar()  # fmt: skip
        largest: list[str] = []
        if has_group:
            largest = list(conn.execute(
                sa.text("SELECT group_key FROM dead_letters WHERE status = 'open' GROUP BY group_key "
                        "ORDER BY count(*) DESC LIMIT 25")
            ).scalars())  # fmt: skip
        group = largest[0] if largest else None
        dead = conn.execute(
            sa.text(
                "SELECT max(id) FROM dead_letters WHERE status = 'open'" + (" AND group_key = :g" if group else "")
            ),
            {"g": group} if group else {},
        ).scalar()
        newest = conn.execute(sa.text("SELECT id FROM ingestions ORDER BY created_at DESC, id DESC LIMIT 25")).scalars()
        newest_ingestions = [str(i) for i in newest]
    return {"ingestion": ingestion, "record_type": "sessions", "record": record, "dead_letter": dead,
            "group": group, "job": "daily-quality", "newest_ingestions": newest_ingestions,
            "largest_groups": largest}  # fmt: skip


def _value(path: str, argument: str, samples: dict[str, Any]) -> Any:
    """The value of one parameter of a route under /ui/, by the page it belongs to and its name;
    None when it cannot be filled."""
    parts = [p for p in path.split("/") if p and not p.startswith("<")]
    section = parts[2] if len(parts) > 2 and parts[1] == "api" else parts[1] if len(parts) > 1 else ""
    name = argument.lower()
    if "type" in name:
        return samples["record_type"]
    if section.startswith("ingestion"):
        return samples["ingestion"] if ("id" in name or "ingestion" in name) else None
    if section.startswith("dead"):
        if "group" in path or "group" in name:
            return samples["group"]
        return samples["dead_letter"] if ("id" in name or "letter" in name) else None
    if section.startswith("record"):
        return samples["record"] if ("key" in name or "id" in name) else None
    if section.startswith("quality"):
        return samples["record_type"]
    if section.startswith("job") and name in ("name", "job", "job_name"):
        return samples["job"]
    return None


# Routes under /ui/ that are not pages.
NOT_PAGES = {
    "ui.static": "asset",
    "ui.package_asset": "asset",
    "ui.signin": "the sign-in form",
    "ui.home": "a redirect to the overview",
}


def routes(app: Any, samples: dict[str, Any]) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """(endpoint, path) of every GET page under /ui/ in the app's URL map, the navigation's first,
    then their JSON, then the pages with parameters; and the routes skipped, with why."""
    from etl_app.ui.blueprint import NAVIGATION

    order = {endpoint: i for i, (endpoint, _) in enumerate(NAVIGATION)}
    adapter = app.url_map.bind("127.0.0.1")
    found: list[tuple[tuple[int, int, str], str, str]] = []
    skipped: list[dict[str, str]] = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/ui/") or "GET" not in (rule.methods or ()):
            continue
        if rule.endpoint in NOT_PAGES:
            continue
        values = {arg: _value(rule.rule, arg, samples) for arg in rule.arguments}
        missing = sorted(arg for arg, value in values.items() if value is None)
        if missing:
            skipped.append(
                {"route": rule.rule, "endpoint": rule.endpoint, "reason": f"no value for {', '.join(missing)}"}
            )
            continue
        try:
            path = adapter.build(rule.endpoint, {k: str(v) for k, v in values.items()}, method="GET")
        except Exception as exc:  # noqa: BLE001 - a parameter the sample does not fit
            skipped.append({"route": rule.rule, "endpoint": rule.endpoint, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        rank = 0 if rule.endpoint in order else 1 if rule.rule.startswith("/ui/api/") else 2
        found.append(((rank, order.get(rule.endpoint, 99), path), rule.endpoint, path))
    pages = [(endpoint, path) for _, endpoint, path in sorted(found)]
    for endpoint, label in NAVIGATION:
        if endpoint not in app.view_functions:
            skipped.append({"route": endpoint, "endpoint": endpoint, "reason": f"the {label} page does not exist yet"})
    return pages, skipped


_OLDER = re.compile(r'href="(/ui/[^"?#]*\?[^"#]*\b(?:cursor|after|before)=[^"#]*)"')
_SELECT = re.compile(r'<select[^>]*\bname="([^"]+)"[^>]*>(.*?)</select>', re.S)


def variants(path: str, body: bytes, samples: dict[str, Any]) -> list[str]:
    """More of a list page, found in its HTML: its older page (a keyset link: ``cursor``,
    ``after`` or ``before``) and the list filtered to the sample record type (a ``<select>``
    offering it)."""
    text = body.decode(errors="replace")
    found = []
    older = _OLDER.search(text)
    if older and older.group(1).split("?")[0] == path:
        found.append(html.unescape(older.group(1)))
    for name, options in _SELECT.findall(text):
        if f'value="{samples["record_type"]}"' in options:
            found.append(f"{path}?{urlencode({name: samples['record_type']})}")
    return found


# Query strings a JSON endpoint needs to answer more than nothing, by endpoint
# (the ids a list page polls: its first page's).
QUERIES = {
    "ui.ingestions_json": lambda s: urlencode([("id", i) for i in s["newest_ingestions"]]),
    "ui.dead_letters_json": lambda s: urlencode([("group", g) for g in s["largest_groups"]]),
}


def time_pages(
    port: int, key: str, pages: list[tuple[str, str]], samples: dict[str, Any], requests: int = REQUESTS
) -> list[dict[str, Any]]:
    """Each page ``requests`` times, one request at a time; a list page's variants after it."""
    client = Client(port)
    queue = [(e, p + (f"?{QUERIES[e](samples)}" if e in QUERIES else ""), True) for e, p in pages]
    try:
        client.sign_in(key)
        out = []
        while queue:
            endpoint, path, base = queue.pop(0)
            seconds, statuses, size, stream, body = [], set(), 0, False, b""
            for _ in range(requests):
                status, response, body, took = client.request("GET", path)
                seconds.append(took)
                statuses.add(status)
                size = len(body)
                stream = stream or response.getheader("Content-Type", "").startswith("text/event-stream")
            ms = [s * 1000 for s in seconds]
            page = {"endpoint": endpoint, "path": path, "status": sorted(statuses), "bytes": size,
                    "first_ms": round(ms[0], 1), "median_ms": round(statistics.median(ms), 1),
                    "max_ms": round(max(ms), 1), "requests": requests, "stream": stream}  # fmt: skip
            shown = path if len(path) <= 90 else path[:87] + "..."
            say(
                f"  {shown}: {page['median_ms']:.1f} ms median, {page['max_ms']:.1f} max ({page['status']}, {size:,} B)"
            )
            out.append(page)
            if base and "?" not in path and status == 200 and not stream:
                queue[:0] = [(endpoint, extra, False) for extra in variants(path, body, samples)]
        return out
    finally:
        client.close()


def _web(ctx: Context, keys: str) -> tuple[Proc | None, int]:
    """A web process that knows the operator key: the app's, when this phase starts it (with its
    workers, as the other app phases do), else one more of the Procfile's web beside it."""
    if ctx.app is None:
        say("starting the app: the Procfile's web (gunicorn, 2 workers) and its workers")
        ctx.procs.env["ETL_API_KEYS"] = keys
        ctx.app, ctx.port = start_app(ctx.procs)
        return None, ctx.port
    port = free_port()
    web = ctx.procs.start("ui-web", ["sh", "-c", f"exec {procfile()['web']}"], HOST="127.0.0.1", PORT=str(port),
                          WEB_PORT=str(port), WEB_CONCURRENCY="2", ETL_API_KEYS=keys)  # fmt: skip
    wait_http_ok(web, port)
    return web, port


def run_ui(ctx: Context, records: int, dead_letters: int) -> dict[str, Any]:
    from etl_app.web.app import create_app

    engine = make_engine(ctx.database_url, pool_size=1, application_name="bench-ui")
    web = None
    try:
        seeded = seed(engine, records, dead_letters)
        say(
            f"  seeded {seeded['raw_records']:,} records, {seeded['dead_letters']:,} dead letters, "
            f"{seeded['ingestions']:,} ingestions in {seeded['seed_seconds']:.0f} s"
        )
        samples = _samples(engine)
        operator = "bench-operator-" + secrets.token_urlsafe(12)
        keys = f"{ctx.procs.env.get('ETL_API_KEYS') or ctx.api_key},{operator}:operator"
        urls = {"database_url": ctx.database_url, "redis_url": ctx.redis_url, "broker_url": ctx.redis_url}
        app = create_app({**urls, "api_keys": tuple(keys.split(","))})  # its URL map: the routes to time
        pages, skipped = routes(app, samples)
        web, port = _web(ctx, keys)
        say(f"  timing {len(pages)} pages, {REQUESTS} requests each, signed in as an operator")
        timed = time_pages(port, operator, pages, samples)
        slowest = max(timed, key=lambda p: p["median_ms"], default=None)
        failed = [p["path"] for p in timed if any(s >= 400 for s in p["status"])]
        return {
            "records": records,
            "dead_letters_asked": dead_letters,
            "seeded": seeded,
            "samples": {
                k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in samples.items() if k != "newest_ingestions"
            },
            "pages": timed,
            "skipped": skipped,
            "slowest": slowest and {"path": slowest["path"], "median_ms": slowest["median_ms"]},
            "failed": failed,
        }
    finally:
        if web is not None:
            ctx.procs.stop(web)
        engine.dispose()
