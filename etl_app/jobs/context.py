"""What a scheduled job is given: its run window and a connection in the runner's transaction.

A job is a plain function ``run(ctx: JobContext) -> int`` (the rows it touched); a job that
reaches beyond the database (the broker, the shared Redis) takes ``run(ctx, tools: JobTools)``. The runner
(:mod:`etl_app.jobs.runner`) takes the job's lock, records the run in ``job_runs``, opens the
transaction, calls the function and commits; a job that works in bounded batches may call
``ctx.commit()`` between them. Jobs recompute what their window covers, so running one twice
for the same window gives the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import redis
import sqlalchemy as sa

from etl_app.config import Settings
from etl_app.ingest.send import Publisher
from etl_app.record_types import Registry


@dataclass(frozen=True)
class Window:
    """The UTC days a run covers, both inclusive."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"a window ends ({self.end}) before it starts ({self.start})")

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @classmethod
    def last_days(cls, n: int, today: date) -> Window:
        """The ``n`` days up to and including ``today``."""
        return cls(today - timedelta(days=max(n, 1) - 1), today)


@dataclass(frozen=True)
class JobTools:
    """What the jobs that reach beyond the database take (the sweeper, lookup-refresh): the
    record types, a publisher to send records down the pipeline, and the shared Redis (breakers,
    rate limits) with the lookups' cache (ETL_LOOKUP_CACHE_URL, else the same Redis)."""

    registry: Registry
    publisher: Publisher
    cache: redis.Redis
    lookup_cache: redis.Redis


@dataclass
class JobContext:
    conn: sa.Connection
    window: Window
    settings: Settings
    now: datetime  # the run's "as of" time (UTC), the same for every statement of the run
    commit: Callable[[], None]
