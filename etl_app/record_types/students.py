"""Students: table (no derived fields, no as-of rules)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl_app.db import extra_column, lineage_columns, metadata
from etl_app.record_types import RecordType
from schemas.fast import fast_loader
from schemas.students import StudentSchema

table = sa.Table(
    "students",
    metadata,
    sa.Column("student_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("grade_level", sa.Integer),
    sa.Column("enrolled_on", sa.Date),
    sa.Column("event_time", sa.DateTime(timezone=True)),
    *lineage_columns(),
    extra_column(),
)


def derive(data: Mapping[str, Any], as_of: datetime, parents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Students have no derived fields."""
    return {}


RECORD_TYPE = RecordType(
    name="students",
    key="student_id",
    schema=StudentSchema,
    fast_load=fast_loader(StudentSchema),
    derive=derive,
    table=table,
    expected=("grade_level", "enrolled_on"),  # quality's completeness.overall; name may be withheld
    description="Students of the platform.",
)
