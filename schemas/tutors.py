"""Tutors: input schema (natural key ``tutor_id``).

Rules (docs/record-types.md, plus the shared rules of ``schemas.common``):
- tutor_id: id, required. name: 1..200 chars, required. email: marshmallow's Email
  validator, at most 254 chars in all and 64 before the "@" (RFC 5321), required; kept
  as given (case is not changed).
- age: int 16..100, optional. location: at most 200 chars, optional.
- education_level (high_school, bachelors, masters, phd, other), subject_type (stem,
  humanities, languages, test_prep, arts, other), behavioral_archetype (high_performer,
  steady, at_risk, new_tutor, churning): optional enums. status (active, inactive,
  on_leave, churned): required enum. Enums are exact, lower case.
- subjects: required list of 1..20 items, each 1..100 chars after stripping (an empty
  or null item is an error, not skipped). The 1..20 limit applies to the INPUT list,
  before de-duplication. Duplicates are then removed case-insensitively
  (``str.casefold``), keeping the first spelling and the input order.
- onboarding_date: YYYY-MM-DD, required; "not after received_at's date" is checked in
  ``etl_app.record_types.tutors.check_as_of`` (it needs the as-of moment).
- baseline_sessions_per_week: number 0..80 (bounds inclusive, fractions allowed), optional.
- updated_at: timestamp, optional; when absent ``check_as_of`` sets it to received_at.
  A future updated_at, or one before onboarding_date, is accepted.
"""

from __future__ import annotations

from typing import Any

from marshmallow import post_load, validate

from schemas.common import Day, Email, Enum, Id, Number, RecordSchema, Str, StrictInt, StrList, Timestamp

EDUCATION_LEVELS = ("high_school", "bachelors", "masters", "phd", "other")
SUBJECT_TYPES = ("stem", "humanities", "languages", "test_prep", "arts", "other")
ARCHETYPES = ("high_performer", "steady", "at_risk", "new_tutor", "churning")
STATUSES = ("active", "inactive", "on_leave", "churned")


def dedupe_casefold(items: list[str]) -> list[str]:
    """Items without case-insensitive duplicates, first spelling and order kept."""
    seen: set[str] = set()
    out = []
    for item in items:
        folded = item.casefold()
        if folded not in seen:
            seen.add(folded)
            out.append(item)
    return out


class TutorSchema(RecordSchema):
    tutor_id = Id(required=True)
    name = Str(max_length=200, required=True)
    email = Email(required=True)
    age = StrictInt(validate=validate.Range(16, 100))
    location = Str(max_length=200)
    education_level = Enum(*EDUCATION_LEVELS)
    subjects = StrList(item_max_length=100, min_items=1, max_items=20, required=True)
    subject_type = Enum(*SUBJECT_TYPES)
    behavioral_archetype = Enum(*ARCHETYPES)
    onboarding_date = Day(required=True)
    baseline_sessions_per_week = Number(validate=validate.Range(0, 80))
    status = Enum(*STATUSES, required=True)
    updated_at = Timestamp()

    @post_load
    def _dedupe_subjects(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["subjects"] = dedupe_casefold(data["subjects"])
        return data
