"""The scheduled jobs' table: job_runs, with its statuses and triggers."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from etl_app.db import TSTZ, Base

# job_runs.status values. A run is `running` while it holds its job's lock; a run that found the
# lock held by another is recorded `skipped` at once (it never waits, never does the work).
RUNNING = "running"


SUCCEEDED = "succeeded"


FAILED = "failed"


SKIPPED = "skipped"


JOB_RUN_STATUSES = (RUNNING, SUCCEEDED, FAILED, SKIPPED)


JOB_TRIGGERS = ("beat", "cli", "api")


class JobRun(Base):
    """One run of a scheduled job (etl_app.jobs): its window, who started it, what it did."""

    __tablename__ = "job_runs"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {JOB_RUN_STATUSES!r}", name="status"),
        sa.CheckConstraint(f"trigger IN {JOB_TRIGGERS!r}", name="trigger"),
        sa.Index("ix_job_runs_job_started_at", "job", "started_at"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    job: Mapped[str] = mapped_column(sa.Text)
    window_start: Mapped[date] = mapped_column(sa.Date)
    window_end: Mapped[date] = mapped_column(sa.Date)
    trigger: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.Text, server_default=RUNNING)
    task_id: Mapped[str | None] = mapped_column(sa.Text)  # the Celery task, when one ran it
    started_at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())
    finished_at: Mapped[datetime | None] = mapped_column(TSTZ)
    rows: Mapped[int | None] = mapped_column(sa.Integer)
    error: Mapped[str | None] = mapped_column(sa.Text)
