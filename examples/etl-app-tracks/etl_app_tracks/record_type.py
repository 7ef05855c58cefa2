"""Tracks: table, as-of check and derived fields.

- check_as_of: released_on must not be after the UTC date the record was received.
- duration_minutes: duration_seconds / 60, rounded to 2 decimals.
- decade: the first year of released_on's decade (1994 -> 1990); null without released_on.
- years_since_release: whole years from released_on to the UTC date of as-of (received_at);
  null without released_on.
- is_long: duration_seconds of 10 minutes or more.

The table sits on etl_app's metadata with etl_app's lineage columns; its revisions are in
``migrations/`` (branch ``tracks``) and must create exactly this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl_app.db import lineage_columns, metadata
from etl_app.record_types import FieldErrors, RecordType
from etl_app_tracks.schema import TrackSchema

table = sa.Table(
    "tracks",
    metadata,
    sa.Column("track_id", sa.Text, primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("artist", sa.Text, nullable=False),
    sa.Column("album", sa.Text),
    sa.Column("genre", sa.Text),
    sa.Column("duration_seconds", sa.Integer, nullable=False),
    sa.Column("released_on", sa.Date),
    sa.Column("explicit", sa.Boolean),
    sa.Column("event_time", sa.DateTime(timezone=True)),
    sa.Column("duration_minutes", sa.Double, nullable=False),
    sa.Column("decade", sa.Integer),
    sa.Column("years_since_release", sa.Integer),
    sa.Column("is_long", sa.Boolean, nullable=False),
    *lineage_columns(),
)


def check_as_of(data: dict[str, Any], as_of: datetime) -> FieldErrors:
    released_on = data.get("released_on")
    if released_on is not None and released_on > as_of.astimezone(UTC).date():
        return {"released_on": ["Must not be after the date the record was received."]}
    return {}


def derive(data: Mapping[str, Any], as_of: datetime, parents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    released_on = data.get("released_on")
    years = None
    if released_on is not None:
        today = as_of.astimezone(UTC).date()
        years = today.year - released_on.year - ((today.month, today.day) < (released_on.month, released_on.day))
    return {
        "duration_minutes": round(data["duration_seconds"] / 60, 2),
        "decade": released_on.year // 10 * 10 if released_on is not None else None,
        "years_since_release": years,
        "is_long": data["duration_seconds"] >= 600,
    }


RECORD_TYPE = RecordType(
    name="tracks",
    key="track_id",
    schema=TrackSchema,
    derive=derive,
    table=table,
    check_as_of=check_as_of,
    # Quality's completeness.overall averages these; released_on and explicit may be left out.
    expected=("album", "genre"),
    description="Music tracks, with their length in minutes, decade and age.",
)
