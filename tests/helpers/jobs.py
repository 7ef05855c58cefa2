"""Running a job function the way the runner does: one transaction, committed at the end."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import sqlalchemy as sa

from etl_app.config import Settings
from etl_app.jobs.context import JobContext, Window


def run_job(engine: sa.Engine, job: Callable[[JobContext], int], start: date, end: date) -> int:
    """Run ``job`` over the days ``start``..``end`` in one committed transaction; its rows touched."""
    with engine.connect() as conn:
        ctx = JobContext(conn, Window(start, end), Settings(), datetime.now(UTC), conn.commit)
        touched = job(ctx)
        conn.commit()
    return touched


def rows(engine: sa.Engine, statement: str, **params) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(statement), params).mappings()]
