"""The one way a scheduled job runs, whoever starts it: beat (a Celery task), the CLI or the API.

``run_job(engine, name, window=None, trigger="beat", tools=None)``:

1. On a dedicated connection (autocommit) it takes the job's PostgreSQL advisory lock with
   ``pg_try_advisory_lock`` (a session lock: it goes with the connection if the process dies).
2. The loser does not wait: its run is recorded ``skipped`` at once, its ``error`` naming the run
   that holds the lock, and nothing else happens. A second beat started by mistake, or two
   operators pressing "Run now" together, thus never double a run; the next scheduled run
   recomputes whatever the skipped one would have (jobs are idempotent per window).
3. The winner first closes any ``running`` row of the job left by a process that died holding
   the lock (``failed``, "abandoned"), records its own run ``running``, then calls the job's
   function in a transaction of its own (a batching job commits with ``ctx.commit()``), commits,
   and records ``succeeded`` with the rows touched, or ``failed`` with the error (the job's
   uncommitted work is rolled back). Then it releases the lock.

The outbox sweeper runs every minute and mostly finds nothing: its runs are recorded only when
they re-sent records or failed (``Job.record == "when_rows"``), and a sweep that finds the lock
held is only logged.

Every recorded run, and every run the CLI or the API started, is also written to the audit
trail (etl_app.audit, action ``job_run``) by ``actor``: the API key id for the API, else
``cli`` or ``beat``; ``ok`` for a run that succeeded, ``failed`` with the error for one that
failed or was skipped.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl_app import audit, clock
from etl_app.config import Settings
from etl_app.jobs.context import JobContext, JobTools, Window
from etl_app.jobs.registry import Job, get_job
from etl_app.models import FAILED, JOB_TRIGGERS, RUNNING, SKIPPED, SUCCEEDED, sql

log = logging.getLogger(__name__)

# The first key of every job's advisory lock ("ETLJ"); the second is a hash of the job's name.
LOCK_NAMESPACE = 0x45544C4A
MAX_ERROR_CHARS = 4000


def lock_key(name: str) -> int:
    """The job's key in :data:`LOCK_NAMESPACE`: the CRC-32 of its name, as a signed int4."""
    crc = zlib.crc32(name.encode())
    return crc - 2**32 if crc >= 2**31 else crc


@dataclass
class RunOutcome:
    job: str
    window: Window
    trigger: str
    status: str  # succeeded, failed or skipped
    run_id: int | None = None  # None: a sweeper run that was not recorded
    rows: int | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "job": self.job,
            "window": {"from": self.window.start.isoformat(), "to": self.window.end.isoformat()},
            "trigger": self.trigger,
            "status": self.status,
            "rows": self.rows,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


_INSERT = sql(
    "INSERT INTO job_runs (job, window_start, window_end, trigger, status, task_id, started_at, finished_at, "
    "rows, error) VALUES (:job, :start, :end, :trigger, :status, :task_id, "
    "coalesce(CAST(:started_at AS timestamptz), clock_timestamp()), "
    "CASE WHEN :status = :RUNNING THEN NULL ELSE clock_timestamp() END, :rows, :error) "
    "RETURNING id, started_at, finished_at"
)
_FINISH = sa.text(
    "UPDATE job_runs SET status = :status, rows = :rows, error = :error, finished_at = clock_timestamp() "
    "WHERE id = :id RETURNING finished_at"
)
_ABANDONED = sql(
    "UPDATE job_runs SET status = :FAILED, finished_at = clock_timestamp(), "
    "error = 'abandoned: the process running it was lost (its lock was released)' "
    "WHERE job = :job AND status = :RUNNING"
)
_HOLDER = sql(
    "SELECT id, trigger, started_at FROM job_runs WHERE job = :job AND status = :RUNNING ORDER BY id DESC LIMIT 1"
)


def run_job(
    engine: sa.Engine,
    name: str,
    window: Window | None = None,
    trigger: str = "beat",
    *,
    task_id: str | None = None,
    settings: Settings | None = None,
    tools: JobTools | None = None,
    now: datetime | None = None,
    actor: str | None = None,
    request_id: str | None = None,
) -> RunOutcome:
    """Run the job ``name`` now under its lock and record the run (see the module docstring).

    ``engine``: the database; ``settings`` default to the environment's; ``tools``: what a job
    that reaches beyond the database takes (the sweeper and lookup-refresh need them; a worker's,
    the API's or the CLI's runtime gives them as ``job_tools``). ``window``: the days to cover,
    else the job's default window of the UTC day of ``now`` (default: the current time, the
    run's "as of"). Never raises for the job's own
    failure: that is the outcome's ``failed`` status and ``error``; raises :class:`UnknownJob`
    and, if the database cannot be reached to take the lock, the database error. ``actor``: who
    the audit trail names (default: the trigger); ``request_id``: the HTTP request, if any."""
    job = get_job(name)
    if trigger not in JOB_TRIGGERS:
        raise ValueError(f"trigger must be one of {JOB_TRIGGERS}, not {trigger!r}")
    if settings is None:
        settings = Settings.from_env()
    if job.needs_tools and tools is None:
        raise TypeError(f"the job {name!r} needs its JobTools (it sends to the broker or uses Redis)")
    now = (now or clock.utcnow()).astimezone(UTC)
    window = window or job.default_window(now.date(), settings)
    outcome = RunOutcome(job=name, window=window, trigger=trigger, status=SKIPPED)

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as books:
        if not books.scalar(sa.select(sa.func.pg_try_advisory_lock(LOCK_NAMESPACE, lock_key(name)))):
            outcome = _skipped(books, job, outcome, task_id)
        else:
            try:
                outcome = _run_locked(books, engine, tools, job, outcome, task_id, settings, now)
            finally:
                _unlock(books, name)
        if outcome.run_id is not None or trigger != "beat":
            _audit(books, outcome, actor or trigger, request_id)
        return outcome


def _audit(books: sa.Connection, outcome: RunOutcome, actor: str, request_id: str | None) -> None:
    target = {
        "job": outcome.job,
        "window": {"from": outcome.window.start.isoformat(), "to": outcome.window.end.isoformat()},
        "run_id": outcome.run_id,
        "trigger": outcome.trigger,
    }
    ok = outcome.status == SUCCEEDED
    message = None if ok else f"{outcome.status}: {outcome.error}"
    entry = audit.Entry(actor, "job_run", target, outcome.rows, audit.OK if ok else audit.FAILED, message, request_id)
    try:
        audit.record(books, entry)  # autocommit, like the run's own record
    except Exception:
        log.exception("job %s: could not write its audit entry", outcome.job)


def _skipped(books: sa.Connection, job: Job, outcome: RunOutcome, task_id: str | None) -> RunOutcome:
    holder = books.execute(_HOLDER, {"job": job.name}).first()
    outcome.error = f"another run of {job.name} holds its lock" + (
        f" (run {holder.id}, {holder.trigger}, started {holder.started_at.isoformat()})" if holder else ""
    )
    log.warning("job %s: skipped, %s", job.name, outcome.error)
    if job.record == "always":
        _insert(books, outcome, task_id)
    return outcome


def _run_locked(
    books: sa.Connection,
    engine: sa.Engine,
    tools: JobTools | None,
    job: Job,
    outcome: RunOutcome,
    task_id: str | None,
    settings: Settings,
    now: datetime,
) -> RunOutcome:
    if job.record == "always":
        books.execute(_ABANDONED, {"job": job.name})
        outcome.status = RUNNING
        _insert(books, outcome, task_id)
    else:
        outcome.started_at = books.scalar(sa.select(sa.func.clock_timestamp()))
    try:
        function = job.load()
        with engine.connect() as conn:
            ctx = JobContext(conn=conn, window=outcome.window, settings=settings, now=now, commit=conn.commit)
            rows = function(ctx, tools) if job.needs_tools else function(ctx)
            conn.commit()
        outcome.status, outcome.rows = SUCCEEDED, int(rows or 0)
        log.info("job %s (%s, %s): %d rows", job.name, outcome.trigger, _window_text(outcome.window), outcome.rows)
    except Exception as exc:  # the job's failure is its run's outcome
        log.exception("job %s (%s) failed", job.name, outcome.trigger)
        outcome.status, outcome.error = FAILED, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    if outcome.run_id is not None:
        outcome.finished_at = books.scalar(
            _FINISH, {"id": outcome.run_id, "status": outcome.status, "rows": outcome.rows, "error": outcome.error}
        )
    elif outcome.rows or outcome.status == FAILED:
        _insert(books, outcome, task_id, started_at=outcome.started_at)
    return outcome


def _insert(books: sa.Connection, outcome: RunOutcome, task_id: str | None, started_at: datetime | None = None) -> None:
    row = books.execute(
        _INSERT,
        {
            "job": outcome.job,
            "start": outcome.window.start,
            "end": outcome.window.end,
            "trigger": outcome.trigger,
            "status": outcome.status,
            "task_id": task_id,
            "rows": outcome.rows,
            "error": outcome.error,
            "started_at": started_at,
        },
    ).one()
    outcome.run_id, outcome.started_at, outcome.finished_at = row.id, row.started_at, row.finished_at


def _unlock(books: sa.Connection, name: str) -> None:
    """Release the lock; if that fails, close the connection, which releases it too (a pooled
    connection must never go back to the pool holding it)."""
    try:
        books.scalar(sa.select(sa.func.pg_advisory_unlock(LOCK_NAMESPACE, lock_key(name))))
    except Exception:  # noqa: BLE001 - whatever it was, the connection goes
        log.warning("job %s: lock not released cleanly; dropping its connection", name)
        books.invalidate()


def _window_text(window: Window) -> str:
    return window.start.isoformat() if window.days == 1 else f"{window.start.isoformat()}..{window.end.isoformat()}"


# -- reading runs ----------------------------------------------------------------------------

# Each job's newest runs by a backward walk of ix_job_runs_job_started_at, LIMIT a job: the cost
# stays that of ``per_job`` rows a job however long job_runs grows (a window over every run of a
# job sorted them all).
_RECENT = sa.text(
    """
    SELECT r.* FROM unnest(CAST(:jobs AS text[])) AS j(name)
    CROSS JOIN LATERAL (
        SELECT id, job, window_start, window_end, trigger, status, task_id, started_at, finished_at, rows, error
        FROM job_runs WHERE job = j.name ORDER BY started_at DESC, id DESC LIMIT :per_job
    ) r
    ORDER BY r.job, r.started_at DESC, r.id DESC
    """
)


def run_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "window": {"from": row.window_start.isoformat(), "to": row.window_end.isoformat()},
        "trigger": row.trigger,
        "status": row.status,
        "task_id": row.task_id,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "rows": row.rows,
        "error": row.error,
    }


def recent_runs(conn: sa.Connection, jobs: list[str], per_job: int = 10) -> dict[str, list[dict[str, Any]]]:
    """The latest runs of each job, newest first."""
    out: dict[str, list[dict[str, Any]]] = {job: [] for job in jobs}
    for row in conn.execute(_RECENT, {"jobs": jobs, "per_job": per_job}):
        out[row.job].append(run_dict(row))
    return out
