"""The scheduled jobs: name → function, Celery task, schedule, default window, description.

A job's function is named by ``"module:attribute"`` and imported when the job runs, so that the
registry (and ``etl-app jobs list``) never imports a job's module. Schedules live in
``celeryconfig.py`` (beat reads them there; ``ETL_SCHEDULE_<JOB>`` overrides each), read back
here for display.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import celeryconfig
from etl_app import names
from etl_app.config import Settings
from etl_app.jobs.context import JobContext, Window

JobFunction = Callable[[JobContext], int]


def today_only(today: date, settings: Settings) -> Window:
    """Jobs that work as of the run's time, not over days: their window is the run's day."""
    return Window(today, today)


def yesterday_and_today(today: date, settings: Settings) -> Window:
    """Yesterday is final only after midnight: the run just after it settles it, today so far too."""
    return Window(today - timedelta(days=1), today)


def every_day(today: date, settings: Settings) -> Window:
    """Every day a window may start on, up to today: a job that rewrites whatever is stored."""
    return Window(FIRST_DAY, today)


def last_rollup_days(today: date, settings: Settings) -> Window:
    """The last ``ETL_ROLLUP_DAYS`` days, today included: late data land in recent days."""
    return Window.last_days(settings.rollup_days, today)


@dataclass(frozen=True)
class Job:
    name: str
    function: str  # "module:attribute" of ``run(ctx: JobContext) -> int``
    task_name: str
    default_window: Callable[[date, Settings], Window]
    description: str
    # Whether every run is written to job_runs ("always"), or only runs that touched rows or
    # failed ("when_rows": the sweeper, which runs every minute and mostly finds nothing).
    record: str = "always"
    # Whether the function takes JobTools (the broker, the shared Redis) beside its context.
    needs_tools: bool = False
    takes_window: bool = True  # False: the window only labels the run (the job works as of now)
    scheduled: bool = True  # False: beat never runs it (run by hand: the CLI, the API, the Jobs page)

    @property
    def schedule_variable(self) -> str | None:
        if not self.scheduled:
            return None
        if self.name in celeryconfig.JOB_SCHEDULES:
            return celeryconfig.JOB_SCHEDULES[self.name][0]
        return "ETL_SWEEP_INTERVAL_SECONDS"

    @property
    def schedule(self) -> str:
        """As beat runs it: a crontab expression (UTC), or ``every N s``; ``by hand`` when it does not."""
        if not self.scheduled:
            return "by hand"
        if self.name in celeryconfig.JOB_SCHEDULES:
            expression = celeryconfig.job_schedule_expression(self.name)
        else:
            expression = os.environ.get("ETL_SWEEP_INTERVAL_SECONDS", "").strip() or "60"
        try:
            return f"every {float(expression):g} s"
        except ValueError:
            return " ".join(expression.split())

    def load(self) -> JobFunction:
        module, _, attribute = self.function.partition(":")
        return getattr(importlib.import_module(module), attribute)


OUTBOX_SWEEPER = "outbox-sweeper"

JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job(
            name="re-enrich",
            function="etl_app.jobs.reenrich:run_re_enrich",
            task_name=names.RE_ENRICH,
            default_window=today_only,
            takes_window=False,
            description="Recompute the tutors' time-dependent derived fields (tenure_days, is_new_tutor, "
            "experience_level, is_active_today) as of the run's time.",
        ),
        Job(
            name="daily-quality",
            function="etl_app.quality.daily:run_daily_quality",
            task_name=names.DAILY_QUALITY,
            default_window=yesterday_and_today,
            description="Recompute the daily quality of every record type for the days of the window "
            "(default: yesterday and today).",
        ),
        Job(
            name="tutor-rollups",
            function="etl_app.jobs.rollups:run_tutor_rollups",
            task_name=names.TUTOR_ROLLUPS,
            default_window=last_rollup_days,
            description="Recompute the tutor performance rollups of the days of the window "
            "(default: the last ETL_ROLLUP_DAYS days).",
        ),
        Job(
            name="retention",
            function="etl_app.jobs.retention:run_retention",
            task_name=names.RETENTION,
            default_window=today_only,
            takes_window=False,
            description="Drop the raw payloads of records persisted more than ETL_RAW_RETENTION_DAYS ago "
            "(dead records and dead letters keep theirs).",
        ),
        Job(
            name="lookup-refresh",
            function="etl_app.jobs.lookup_refresh:run_lookup_refresh",
            task_name=names.LOOKUP_REFRESH,
            default_window=today_only,
            takes_window=False,
            record="when_rows",
            needs_tools=True,
            description="Ask external lookups again for stored records: failed ones once the provider's breaker "
            "is closed, skipped or never asked ones, and lookups older than the provider's TTL.",
        ),
        Job(
            name="quality-recompute",
            function="etl_app.quality.recompute:run_quality_recompute",
            task_name=names.QUALITY_RECOMPUTE,
            default_window=every_day,
            scheduled=False,
            description="Rewrite the stored quality of the ingestions created and the daily-quality days in the "
            "window with the current definitions (run once after an upgrade; default: every day).",
        ),
        Job(
            name=OUTBOX_SWEEPER,
            function="etl_app.jobs.sweeper:run_sweeper",
            task_name=names.SWEEP_OUTBOX,
            default_window=today_only,
            takes_window=False,
            record="when_rows",
            needs_tools=True,
            description="Re-enqueue the unsettled records that no live chain holds (lost messages).",
        ),
    )
}


class UnknownJob(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no job {name!r}; the jobs are {', '.join(JOBS)}")
        self.name = name


def get_job(name: str) -> Job:
    try:
        return JOBS[name]
    except KeyError:
        raise UnknownJob(name) from None


class BadWindow(ValueError):
    """A run window the operator gave that cannot be used (the API's 400, the CLI's error)."""


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# The days a window may cover: far from date's own limits, which the jobs' day arithmetic would overflow.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2100, 12, 31)


def _day(value: str | date, what: str) -> date:
    if isinstance(value, date):
        day = value
    elif not isinstance(value, str) or not _DAY.fullmatch(value.strip()):
        raise BadWindow(f"{what} must be a date YYYY-MM-DD, not {value!r}")
    else:
        try:
            day = date.fromisoformat(value.strip())
        except ValueError as exc:
            raise BadWindow(f"{what}: {exc}") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise BadWindow(f"{what} must be a day from {FIRST_DAY} to {LAST_DAY}, not {day}")
    return day


def window_from(
    job: Job,
    start: str | date | None,
    end: str | date | None,
    today: date | None = None,
    max_days: int | None = None,
) -> Window | None:
    """The window an operator asked for (``--from``/``--to``, the API's ``from``/``to``), both
    inclusive; ``from`` alone runs through today (UTC); neither: None, the job's default window.
    Days from :data:`FIRST_DAY` to :data:`LAST_DAY`, and at most ``max_days`` of them
    (``ETL_JOB_MAX_WINDOW_DAYS`` for the API and the pages; the command line has no such bound)."""
    if start is None and end is None:
        return None
    if not job.takes_window:
        raise BadWindow(f"{job.name} works as of the run's time and takes no window (no from/to)")
    if start is None:
        raise BadWindow("to without from: give from too (from alone runs through today)")
    first = _day(start, "from")
    last = _day(end, "to") if end is not None else (today or datetime.now(UTC).date())
    if last < first:
        raise BadWindow(f"the window ends ({last}) before it starts ({first})")
    days = (last - first).days + 1
    if max_days is not None and days > max_days:
        raise BadWindow(f"the window covers {days} days, over the limit of {max_days} (ETL_JOB_MAX_WINDOW_DAYS)")
    return Window(first, last)


def describe_job(job: Job, runs: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """A job as the API and the Jobs page show it: its schedule, the window a run started now
    would cover, and ``runs`` (newest first, from :func:`etl_app.jobs.runner.recent_runs`)."""
    from etl_app import clock

    window = job.default_window(clock.utcnow().date(), settings)
    return {
        "name": job.name,
        "task": job.task_name,
        "description": job.description,
        "schedule": job.schedule,
        "schedule_variable": job.schedule_variable,
        "takes_window": job.takes_window,
        "default_window": {"from": window.start.isoformat(), "to": window.end.isoformat()},
        "records": "every run" if job.record == "always" else "runs that touched rows or failed",
        "last_run": runs[0] if runs else None,
        "recent_runs": runs,
    }
