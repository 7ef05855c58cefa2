"""Tutors: table, as-of checks and derived fields.

Rules and choices:
- check_as_of: onboarding_date must not be after the UTC date of as-of (received_at);
  the same day is allowed. A null updated_at becomes as-of.
- tenure_days = (UTC date of as-of - onboarding_date) in days; not clamped (never
  negative after check_as_of, but a re-enrichment as of an earlier moment would show it).
- is_new_tutor: tenure_days < 30. experience_level: junior < 90 <= mid < 365 <= senior.
- subject_count: number of subjects after the schema's case-insensitive de-duplication.
- is_active_today: updated_at's UTC date equals as-of's UTC date.
- country, country_code, timezone, latitude, longitude: the geocoder's answer for location
  (declared in ``lookups``, filled in enrich; see :mod:`etl_app.pipeline.lookups`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from etl_app.db import extra_column, lineage_columns, metadata
from etl_app.lookups.geocoder import geocoder_provider
from etl_app.record_types import FieldErrors, RecordType
from schemas.fast import fast_loader
from schemas.tutors import TutorSchema

TSTZ = sa.DateTime(timezone=True)

table = sa.Table(
    "tutors",
    metadata,
    sa.Column("tutor_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("age", sa.Integer),
    sa.Column("location", sa.Text),
    sa.Column("education_level", sa.Text),
    sa.Column("subjects", ARRAY(sa.Text), nullable=False),
    sa.Column("subject_type", sa.Text),
    sa.Column("behavioral_archetype", sa.Text),
    sa.Column("onboarding_date", sa.Date, nullable=False),
    sa.Column("baseline_sessions_per_week", sa.Double),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("updated_at", TSTZ, nullable=False),
    sa.Column("event_time", TSTZ),
    sa.Column("tenure_days", sa.Integer, nullable=False),
    sa.Column("is_new_tutor", sa.Boolean, nullable=False),
    sa.Column("experience_level", sa.Text, nullable=False),
    sa.Column("subject_count", sa.Integer, nullable=False),
    sa.Column("is_active_today", sa.Boolean, nullable=False),
    # Filled by the geocoder (etl_app.lookups.geocoder) in enrich; null when not found, failed or off.
    sa.Column("country", sa.Text),
    sa.Column("country_code", sa.Text),
    sa.Column("timezone", sa.Text),
    sa.Column("latitude", sa.Double),
    sa.Column("longitude", sa.Double),
    sa.Column("lookup_status", sa.Text),  # found, not_found, failed, skipped, empty; null: stored before
    sa.Column("looked_up_at", TSTZ),  # null when nothing was asked (skipped, empty)
    *lineage_columns(),
    extra_column(),
)


def utc_date(moment: datetime) -> date:
    """The UTC calendar date of an aware datetime."""
    return moment.astimezone(UTC).date()


def check_as_of(data: dict[str, Any], as_of: datetime) -> FieldErrors:
    """Default updated_at to as-of; onboarding_date must not be after as-of's UTC date."""
    if data.get("updated_at") is None:
        data["updated_at"] = as_of
    if data["onboarding_date"] > utc_date(as_of):
        return {"onboarding_date": ["Must not be after the date the record was received."]}
    return {}


def experience_level(tenure_days: int) -> str:
    if tenure_days < 90:
        return "junior"
    return "mid" if tenure_days < 365 else "senior"


def derive(data: Mapping[str, Any], as_of: datetime, parents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    today = utc_date(as_of)
    tenure_days = (today - data["onboarding_date"]).days
    return {
        "tenure_days": tenure_days,
        "is_new_tutor": tenure_days < 30,
        "experience_level": experience_level(tenure_days),
        "subject_count": len(data["subjects"]),
        "is_active_today": utc_date(data["updated_at"]) == today,
    }


RECORD_TYPE = RecordType(
    name="tutors",
    key="tutor_id",
    schema=TutorSchema,
    fast_load=fast_loader(TutorSchema),
    derive=derive,
    table=table,
    check_as_of=check_as_of,
    time_field="updated_at",
    # Quality's completeness.overall: where they teach, their education and kind of subjects; age,
    # archetype and weekly baseline may be left out without lowering it (docs/quality.md).
    expected=("location", "education_level", "subject_type"),
    lookups=(geocoder_provider,),
    description="Tutors of the platform, with tenure and experience level, geocoded from their location.",
)
