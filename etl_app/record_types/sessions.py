"""Sessions: table and derived fields (parents: tutors, students).

Rules and choices:
- Calendar fields (is_weekend, time_of_day, week_of_year, month_of_year) are read from
  scheduled_start in the offset it was given in (naive input was taken as UTC).
  timestamptz does not keep that offset, so derive from the validated payload, never
  from a stored row (nothing here depends on as-of, so re-enrichment has no reason to).
- time_of_day by hour: 05-11 morning, 12-16 afternoon, 17-21 evening, 22-04 night.
- is_late_start: late_start_minutes > 5; a null late_start_minutes counts as 0.
- actual_duration_minutes: 0 if no_show, else max(0, duration_minutes - late minutes).
- week_of_year: ISO 8601 week (1..53); month_of_year 1..12.
- No as-of rules: nothing here depends on received_at.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl_app.db import extra_column, lineage_columns, metadata
from etl_app.record_types import Expected, ParentRef, RecordType
from schemas.fast import fast_loader
from schemas.sessions import SessionSchema

TSTZ = sa.DateTime(timezone=True)

table = sa.Table(
    "sessions",
    metadata,
    sa.Column("session_id", sa.Text, primary_key=True),
    sa.Column("tutor_id", sa.Text, nullable=False, index=True),
    sa.Column("student_id", sa.Text, nullable=False, index=True),
    sa.Column("session_number", sa.Integer, nullable=False),
    sa.Column("is_first_session", sa.Boolean, nullable=False),
    sa.Column("scheduled_start", TSTZ, nullable=False),
    sa.Column("actual_start", TSTZ),
    sa.Column("duration_minutes", sa.Integer, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("session_type", sa.Text, nullable=False),
    sa.Column("tutor_initiated_reschedule", sa.Boolean, nullable=False),
    sa.Column("no_show", sa.Boolean, nullable=False),
    sa.Column("late_start_minutes", sa.Integer),
    sa.Column("engagement_score", sa.Double),
    sa.Column("learning_objectives_met", sa.Boolean),
    sa.Column("technical_issues", sa.Boolean, nullable=False),
    sa.Column("event_time", TSTZ),
    sa.Column("is_weekend", sa.Boolean, nullable=False),
    sa.Column("time_of_day", sa.Text, nullable=False),
    sa.Column("is_late_start", sa.Boolean, nullable=False),
    sa.Column("actual_duration_minutes", sa.Integer, nullable=False),
    sa.Column("week_of_year", sa.Integer, nullable=False),
    sa.Column("month_of_year", sa.Integer, nullable=False),
    *lineage_columns(),
    extra_column(),
)


def time_of_day(hour: int) -> str:
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 17:
        return "afternoon"
    if 17 <= hour < 22:
        return "evening"
    return "night"


def derive(data: Mapping[str, Any], as_of: datetime, parents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    start: datetime = data["scheduled_start"]
    late = data.get("late_start_minutes") or 0
    if data["no_show"]:
        actual_duration = 0
    else:
        actual_duration = max(0, data["duration_minutes"] - late)
    return {
        "is_weekend": start.isoweekday() >= 6,
        "time_of_day": time_of_day(start.hour),
        "is_late_start": late > 5,
        "actual_duration_minutes": actual_duration,
        "week_of_year": start.isocalendar().week,
        "month_of_year": start.month,
    }


RECORD_TYPE = RecordType(
    name="sessions",
    key="session_id",
    schema=SessionSchema,
    fast_load=fast_loader(SessionSchema),
    derive=derive,
    table=table,
    parents=(
        ParentRef("tutor_id", "tutors", columns=()),
        ParentRef("student_id", "students", columns=()),
    ),  # derive reads no parent column
    time_field="scheduled_start",
    # Quality's completeness.overall: how it went. A no-show has no actual_start (it must be null):
    # it counts as given then.
    expected=(
        Expected("actual_start", waived_when=("no_show", True)),
        "engagement_score",
        "learning_objectives_met",
    ),
    description="Tutoring sessions, with calendar and punctuality fields.",
)
