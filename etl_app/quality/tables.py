"""The quality domain's tables: daily quality per record type, and the tutor rollup."""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from etl_app.db import Base


class DailyQuality(Base):
    """The data quality of one record type on one UTC day of receipt (docs/quality.md), written by
    the daily-quality job (etl_app.quality.daily); the columns are etl_app.quality's metrics."""

    __tablename__ = "daily_quality"

    record_type: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    received: Mapped[int] = mapped_column(sa.Integer)
    accepted: Mapped[int] = mapped_column(sa.Integer)
    rejected: Mapped[int] = mapped_column(sa.Integer)
    validity: Mapped[float] = mapped_column(sa.Double)
    completeness: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    uniqueness: Mapped[float | None] = mapped_column(sa.Double)
    integrity: Mapped[float | None] = mapped_column(sa.Double)
    timeliness_p50: Mapped[float | None] = mapped_column(sa.Double)
    timeliness_p95: Mapped[float | None] = mapped_column(sa.Double)
    timeliness_max: Mapped[float | None] = mapped_column(sa.Double)
    score: Mapped[float | None] = mapped_column(sa.Double)
    level: Mapped[str] = mapped_column(sa.Text)
    top_errors: Mapped[list[Any]] = mapped_column(JSONB)


class TutorDailyMetrics(Base):
    """The tutor performance rollup (docs/quality.md): one row per tutor and UTC day of
    ``scheduled_start``, written by the tutor-rollups job (etl_app.jobs.rollups)."""

    __tablename__ = "tutor_daily_metrics"
    __table_args__ = (sa.Index("ix_tutor_daily_metrics_day", "day"),)  # the job replaces a window of days

    tutor_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    sessions: Mapped[int] = mapped_column(sa.Integer)
    completed: Mapped[int] = mapped_column(sa.Integer)
    no_shows: Mapped[int] = mapped_column(sa.Integer)
    late_starts: Mapped[int] = mapped_column(sa.Integer)
    tutor_reschedules: Mapped[int] = mapped_column(sa.Integer)
    technical_issues: Mapped[int] = mapped_column(sa.Integer)
    avg_engagement: Mapped[float | None] = mapped_column(sa.Double)
    feedback_count: Mapped[int] = mapped_column(sa.Integer)
    avg_rating: Mapped[float | None] = mapped_column(sa.Double)
