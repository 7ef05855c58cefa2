"""Students: input schema (natural key ``student_id``).

Rules (docs/record-types.md, plus the shared rules of ``schemas.common``):
- student_id: id, required.
- name: 1..200 chars, optional (empty means null).
- grade_level: int 1..16, optional.
- enrolled_on: YYYY-MM-DD, optional. No "not in the future" rule applies to it
  (unlike a tutor's onboarding_date), so a future enrolment date is accepted.
"""

from __future__ import annotations

from marshmallow import validate

from schemas.common import Day, Id, RecordSchema, Str, StrictInt


class StudentSchema(RecordSchema):
    student_id = Id(required=True)
    name = Str(max_length=200)
    grade_level = StrictInt(validate=validate.Range(1, 16))
    enrolled_on = Day()
