"""The tutor-rollups job: each tutor's sessions of each UTC day, with their feedback (docs/quality.md).

One row per tutor and UTC day of ``scheduled_start`` in ``tutor_daily_metrics``, over the stored
``sessions`` rows and the stored ``feedback`` rows of those sessions. A run replaces the window's
days in one statement: changed rows are updated, new ones inserted, and rows of the window's days
that no longer have a session (a session rescheduled to another day) deleted; a row that comes out
the same is left alone, so the rows touched say what changed. Means are rounded to 4 decimals
(half away from zero); ``avg_rating`` is the mean over feedback rows, not over sessions.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa

from etl_app.jobs.context import JobContext
from etl_app.jobs.days import bounds, stored_days

METRICS = (
    "sessions",
    "completed",
    "no_shows",
    "late_starts",
    "tutor_reschedules",
    "technical_issues",
    "avg_engagement",
    "feedback_count",
    "avg_rating",
)
_COLUMNS = ", ".join(METRICS)
_EXCLUDED = ", ".join(f"excluded.{c}" for c in METRICS)

_REPLACE = sa.text(
    f"""
    WITH s AS (
        SELECT session_id, tutor_id, CAST(scheduled_start AT TIME ZONE 'UTC' AS date) AS day, no_show,
               is_late_start, tutor_initiated_reschedule, technical_issues, engagement_score
        FROM sessions WHERE scheduled_start >= :lo AND scheduled_start < :hi
    ), f AS (
        SELECT f.session_id, count(*) AS n, sum(f.overall_rating) AS rating_sum
        FROM feedback f JOIN s ON s.session_id = f.session_id
        GROUP BY f.session_id
    ), fresh AS (
        SELECT s.tutor_id, s.day,
               CAST(count(*) AS integer) AS sessions,
               CAST(count(*) FILTER (WHERE NOT s.no_show) AS integer) AS completed,
               CAST(count(*) FILTER (WHERE s.no_show) AS integer) AS no_shows,
               CAST(count(*) FILTER (WHERE s.is_late_start) AS integer) AS late_starts,
               CAST(count(*) FILTER (WHERE s.tutor_initiated_reschedule) AS integer) AS tutor_reschedules,
               CAST(count(*) FILTER (WHERE s.technical_issues) AS integer) AS technical_issues,
               CAST(round(avg(CAST(s.engagement_score AS numeric)), 4) AS double precision) AS avg_engagement,
               CAST(coalesce(sum(f.n), 0) AS integer) AS feedback_count,
               CAST(round(sum(f.rating_sum) / nullif(sum(f.n), 0), 4) AS double precision) AS avg_rating
        FROM s LEFT JOIN f ON f.session_id = s.session_id
        GROUP BY s.tutor_id, s.day
    ), gone AS (
        DELETE FROM tutor_daily_metrics t
        WHERE t.day BETWEEN :start AND :end
          AND NOT EXISTS (SELECT 1 FROM fresh WHERE fresh.tutor_id = t.tutor_id AND fresh.day = t.day)
        RETURNING 1
    ), written AS (
        INSERT INTO tutor_daily_metrics AS t (tutor_id, day, {_COLUMNS})
        SELECT tutor_id, day, {_COLUMNS} FROM fresh
        ON CONFLICT (tutor_id, day) DO UPDATE SET ({_COLUMNS}) = ({_EXCLUDED})
        WHERE ({", ".join(f"t.{c}" for c in METRICS)}) IS DISTINCT FROM ({_EXCLUDED})
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM written)
    """
)


def run_tutor_rollups(ctx: JobContext) -> int:
    """Recompute every tutor's days in the window; returns the rows changed (written or deleted)."""
    return ctx.conn.execute(_REPLACE, bounds(ctx.window)).scalar_one()


def tutor_days(conn: sa.Connection, tutor_id: str, start: date, end: date) -> list[dict[str, Any]]:
    """The tutor's stored days from ``start`` to ``end`` (inclusive), oldest first."""
    return stored_days(conn, "tutor_daily_metrics", "tutor_id", tutor_id, METRICS, start, end)
