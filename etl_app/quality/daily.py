"""The daily-quality job: the quality of each record type on each UTC day of its window.

One row per (record type, day of ``received_at``) in ``daily_quality``, measured by
:func:`etl_app.quality.quality_select` over the raw records received that day and the
rejections of that day's ingestions. A run replaces the window's rows in one statement per type:
a changed day is updated, a new one inserted, one that no longer has a record deleted; a row that
comes out the same is left alone, so that the rows touched say what changed and a second run of
the same window touches none. A day some of whose payloads the retention job has dropped keeps
the row measured before the drop (it cannot be measured again).
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import sqlalchemy as sa

from etl_app.jobs.context import JobContext
from etl_app.jobs.days import bounds, stored_days
from etl_app.models import sql
from etl_app.quality import METRIC_COLUMNS, quality_select
from etl_app.record_types import RecordType, get_registry

log = logging.getLogger(__name__)

_DAY = "CAST(r.received_at AT TIME ZONE 'UTC' AS date)"
_INGESTION_DAY = "CAST(i.created_at AT TIME ZONE 'UTC' AS date)"
_COLUMNS = ", ".join(METRIC_COLUMNS)
_EXCLUDED = ", ".join(f"excluded.{c}" for c in METRIC_COLUMNS)


def measure_days(record_type: RecordType) -> str:
    """The quality of each day of the window (``:lo``, ``:hi``) of the type (``:t``), as SQL text."""
    return quality_select(
        record_type,
        raw_group=_DAY,
        raw_filter="r.record_type = :t AND r.received_at >= :lo AND r.received_at < :hi",
        ing_group=_INGESTION_DAY,
        ing_filter="i.created_at >= :lo AND i.created_at < :hi",
    )


def replace_statement(record_type: RecordType) -> sa.TextClause:
    measured = measure_days(record_type)
    return sql(
        f"""
        WITH measured AS ({measured}),
        kept AS (SELECT k FROM measured WHERE payloads_dropped > 0),
        fresh AS (SELECT k AS day, {_COLUMNS} FROM measured WHERE payloads_dropped = 0),
        gone AS (
            DELETE FROM daily_quality q
            WHERE q.record_type = :t AND q.day BETWEEN :start AND :end
              AND q.day NOT IN (SELECT day FROM fresh) AND q.day NOT IN (SELECT k FROM kept)
            RETURNING 1
        ), written AS (
            INSERT INTO daily_quality AS q (record_type, day, {_COLUMNS})
            SELECT :t, day, {_COLUMNS} FROM fresh
            ON CONFLICT (record_type, day) DO UPDATE SET ({_COLUMNS}) = ({_EXCLUDED})
            WHERE ({", ".join(f"q.{c}" for c in METRIC_COLUMNS)}) IS DISTINCT FROM ({_EXCLUDED})
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM written)
        """
    )


def run_daily_quality(ctx: JobContext) -> int:
    """Measure every registered type on every day of the window; returns the rows changed
    (written or deleted)."""
    params = bounds(ctx.window)
    # The planner cannot see how few (field, message) pairs the rejections' jsonb holds (it guesses
    # 100 a level): on its cost estimate it would JIT-compile the statement for a second or more,
    # far longer than the statement runs. Off for this job's transaction only.
    ctx.conn.execute(sa.text("SET LOCAL jit = off"))
    summarize_receipt_ranges(ctx.conn)
    touched = 0
    for record_type in get_registry():
        touched += ctx.conn.execute(replace_statement(record_type), {**params, "t": record_type.name}).scalar_one()
    return touched


# The BRIN index the window is read along (migration 0021): a block range VACUUM has not summarized
# yet is read whole by every query. Summarizing takes a lock that only VACUUM, ANALYZE, index
# builds and another summary take too: waited for 5 s at most.
_SUMMARIZE = sa.text("SELECT brin_summarize_new_values('ix_raw_records_received_at')")
SUMMARIZE_LOCK_TIMEOUT = "5s"


def summarize_receipt_ranges(conn: sa.Connection) -> int | None:
    """Summarize the block ranges of ``ix_raw_records_received_at`` stored since the last vacuum
    (autovacuum does it too, when it runs), so the daily window reads only the ranges received
    in it; returns how many were summarized. If the lock is not had within
    :data:`SUMMARIZE_LOCK_TIMEOUT`, or the database user may not (it must own the table), the job
    goes on without: the measure is the same, it reads the ranges not summarized as well."""
    previous = conn.execute(sa.text("SELECT current_setting('lock_timeout')")).scalar_one()
    try:
        with conn.begin_nested():
            conn.execute(sa.text("SELECT set_config('lock_timeout', :t, true)"), {"t": SUMMARIZE_LOCK_TIMEOUT})
            return conn.execute(_SUMMARIZE).scalar_one()
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        log.warning("daily quality: block ranges of raw_records not summarized, reading them whole: %s", exc.orig)
        return None
    finally:
        conn.execute(sa.text("SELECT set_config('lock_timeout', :t, true)"), {"t": previous})


def quality_days(conn: sa.Connection, record_type: str, start: date, end: date) -> list[dict[str, Any]]:
    """The stored rows of ``record_type`` from ``start`` to ``end`` (inclusive), oldest first."""
    return stored_days(conn, "daily_quality", "record_type", record_type, METRIC_COLUMNS, start, end)
