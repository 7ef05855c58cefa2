"""Feedback: table and derived fields (parent: sessions; tutor_id and student_id must match).

Rules and choices:
- is_positive: overall_rating >= 4; is_poor: overall_rating < 3.
- avg_category_rating / category_variance: mean and population variance
  (statistics.pvariance) of the category ratings present, as floats; variance 0.0 for
  one rating; both null when none is present. overall_rating is not a category rating.
- has_text_feedback: free_text_feedback has a non-whitespace character.
- feedback_delay_hours: (submitted_at - (session scheduled_start + duration_minutes))
  in hours, as a float, unrounded; negative when submitted before the scheduled end.
  The session comes from ``parents["sessions"]`` (its stored row); a naive
  scheduled_start there is taken as UTC.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from etl_app.db import extra_column, lineage_columns, metadata
from etl_app.record_types import ParentRef, RecordType
from schemas.fast import fast_loader
from schemas.feedback import CATEGORY_RATINGS, FeedbackSchema

TSTZ = sa.DateTime(timezone=True)

table = sa.Table(
    "feedback",
    metadata,
    sa.Column("feedback_id", sa.Text, primary_key=True),
    sa.Column("session_id", sa.Text, nullable=False, index=True),
    sa.Column("student_id", sa.Text, nullable=False),
    sa.Column("tutor_id", sa.Text, nullable=False),
    sa.Column("overall_rating", sa.Integer, nullable=False),
    *(sa.Column(name, sa.Integer) for name in CATEGORY_RATINGS),
    sa.Column("free_text_feedback", sa.Text),
    sa.Column("is_first_session", sa.Boolean),
    sa.Column("would_recommend", sa.Boolean),
    sa.Column("improvement_areas", ARRAY(sa.Text)),
    sa.Column("submitted_at", TSTZ, nullable=False),
    sa.Column("event_time", TSTZ),
    sa.Column("is_positive", sa.Boolean, nullable=False),
    sa.Column("is_poor", sa.Boolean, nullable=False),
    sa.Column("avg_category_rating", sa.Double),
    sa.Column("category_variance", sa.Double),
    sa.Column("has_text_feedback", sa.Boolean, nullable=False),
    sa.Column("feedback_delay_hours", sa.Double, nullable=False),
    *lineage_columns(),
    extra_column(),
)


def session_end(session: Mapping[str, Any]) -> datetime:
    """The scheduled end of a session row: scheduled_start + duration_minutes."""
    start: datetime = session["scheduled_start"]
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return start + timedelta(minutes=session["duration_minutes"])


def derive(data: Mapping[str, Any], as_of: datetime, parents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    ratings = [data[name] for name in CATEGORY_RATINGS if data.get(name) is not None]
    delay = data["submitted_at"] - session_end(parents["sessions"])
    return {
        "is_positive": data["overall_rating"] >= 4,
        "is_poor": data["overall_rating"] < 3,
        "avg_category_rating": float(statistics.fmean(ratings)) if ratings else None,
        "category_variance": float(statistics.pvariance(ratings)) if ratings else None,
        "has_text_feedback": bool((data.get("free_text_feedback") or "").strip()),
        "feedback_delay_hours": delay.total_seconds() / 3600,
    }


RECORD_TYPE = RecordType(
    name="feedback",
    key="feedback_id",
    schema=FeedbackSchema,
    fast_load=fast_loader(FeedbackSchema),
    derive=derive,
    table=table,
    parents=(
        ParentRef(
            "session_id",
            "sessions",
            must_match=(("tutor_id", "tutor_id"), ("student_id", "student_id")),
            columns=("scheduled_start", "duration_minutes"),  # session_end()
        ),
    ),
    time_field="submitted_at",
    expected=("free_text_feedback", "would_recommend"),  # quality's completeness.overall
    description="Student feedback on sessions, with rating summaries and delay.",
)
