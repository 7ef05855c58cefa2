"""Sessions: input schema (natural key ``session_id``; parents tutors, students).

Rules (docs/record-types.md, plus the shared rules of ``schemas.common``):
- session_id, tutor_id, student_id: ids, required (parent existence is the pipeline's job).
- session_number: int >= 1, required.
- is_first_session: bool, optional; defaults to ``session_number == 1``. True with
  session_number > 1 is an error on is_first_session. False with session_number == 1 is
  accepted (only the first combination is refused).
- scheduled_start: timestamp, required.
- actual_start: timestamp, optional. Must be null when no_show is true (error on
  actual_start). At most 24 h before or after scheduled_start: exactly 24 h is allowed.
- duration_minutes: int 5..480 (the scheduled length), required.
- subject: 1..100 chars, required. session_type: regular, trial, makeup, group,
  exam_prep, required.
- tutor_initiated_reschedule, no_show, technical_issues: bools, default false (null too).
- learning_objectives_met: bool, optional (null stays null).
- late_start_minutes: int >= 0, optional. When absent and actual_start is present it is
  floor((actual_start - scheduled_start) / 1 minute), never below 0. A given value is
  kept as is, even if it disagrees with actual_start, and is accepted with no_show
  (a no-show's actual_duration_minutes is 0 anyway).
- engagement_score: number 0.0..1.0 (inclusive), optional.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from marshmallow import ValidationError, post_load, validate, validates_schema

from schemas.common import Enum, Id, Number, RecordSchema, Str, StrictBool, StrictInt, Timestamp

SESSION_TYPES = ("regular", "trial", "makeup", "group", "exam_prep")
MAX_START_GAP = timedelta(hours=24)


class SessionSchema(RecordSchema):
    session_id = Id(required=True)
    tutor_id = Id(required=True)
    student_id = Id(required=True)
    session_number = StrictInt(required=True, validate=validate.Range(min=1))
    is_first_session = StrictBool()
    scheduled_start = Timestamp(required=True)
    actual_start = Timestamp()
    duration_minutes = StrictInt(required=True, validate=validate.Range(5, 480))
    subject = Str(max_length=100, required=True)
    session_type = Enum(*SESSION_TYPES, required=True)
    tutor_initiated_reschedule = StrictBool(load_default=False)
    no_show = StrictBool(load_default=False)
    late_start_minutes = StrictInt(validate=validate.Range(min=0))
    engagement_score = Number(validate=validate.Range(0.0, 1.0))
    learning_objectives_met = StrictBool()
    technical_issues = StrictBool(load_default=False)

    @validates_schema
    def _check_rules(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        if data["is_first_session"] and data["session_number"] > 1:
            errors["is_first_session"] = ["Must not be true when session_number is greater than 1."]
        actual = data["actual_start"]
        if actual is not None:
            if data["no_show"]:
                errors["actual_start"] = ["Must be null when no_show is true."]
            elif abs(actual - data["scheduled_start"]) > MAX_START_GAP:
                errors["actual_start"] = ["Must be within 24 hours of scheduled_start."]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _fill_defaults(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if data["is_first_session"] is None:
            data["is_first_session"] = data["session_number"] == 1
        if data["late_start_minutes"] is None and data["actual_start"] is not None:
            late = (data["actual_start"] - data["scheduled_start"]) // timedelta(minutes=1)
            data["late_start_minutes"] = max(0, late)
        return data
