"""Tracks: input schema (natural key ``track_id``).

Built on etl_app's strict fields (``schemas.common``): unknown fields are errors, strings are
stripped, integers are JSON integers, days are ``YYYY-MM-DD``; ``source`` and ``event_time``
are accepted as for every type.
- track_id: id, required. title: 1..300 chars, required. artist: 1..200 chars, required.
- album: at most 300 chars, optional. genre: one of GENRES, optional.
- duration_seconds: integer 1..86400, required. released_on: day, optional (not after the
  day the record was received: ``record_type.check_as_of``). explicit: boolean, optional.
"""

from __future__ import annotations

from marshmallow import validate

from schemas.common import Day, Enum, Id, RecordSchema, Str, StrictBool, StrictInt

GENRES = ("rock", "pop", "jazz", "classical", "electronic", "hip_hop", "folk", "other")


class TrackSchema(RecordSchema):
    track_id = Id(required=True)
    title = Str(max_length=300, required=True)
    artist = Str(max_length=200, required=True)
    album = Str(max_length=300)
    genre = Enum(*GENRES)
    duration_seconds = StrictInt(validate=validate.Range(1, 86_400), required=True)
    released_on = Day()
    explicit = StrictBool()
