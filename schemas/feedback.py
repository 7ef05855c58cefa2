"""Feedback: input schema (natural key ``feedback_id``; parent sessions).

Rules (docs/record-types.md, plus the shared rules of ``schemas.common``):
- feedback_id, session_id, student_id, tutor_id: ids, required. That student_id and
  tutor_id equal the session's is checked by the pipeline once the session exists
  (``parent_mismatch``), not here.
- overall_rating: int 1..5, required.
- subject_knowledge_rating, communication_rating, patience_rating, engagement_rating,
  helpfulness_rating: int 1..5, each optional.
- free_text_feedback: at most 5000 chars after stripping, optional (empty means null).
- is_first_session, would_recommend: bools, optional (null stays null; not checked
  against the session).
- improvement_areas: optional list of at most 10 items, each a non-empty string of at
  most 200 chars after stripping (an empty or null item is an error). Kept in input
  order, duplicates kept; an empty list stays an empty list, absent/null is null.
- submitted_at: timestamp, required. It may be before the session's end (the derived
  feedback_delay_hours is then negative) or after received_at.
"""

from __future__ import annotations

from marshmallow import validate

from schemas.common import Id, RecordSchema, Str, StrictBool, StrictInt, StrList, Timestamp

CATEGORY_RATINGS = (
    "subject_knowledge_rating",
    "communication_rating",
    "patience_rating",
    "engagement_rating",
    "helpfulness_rating",
)


def _rating(**kwargs: object) -> StrictInt:
    return StrictInt(validate=validate.Range(1, 5), **kwargs)


class FeedbackSchema(RecordSchema):
    feedback_id = Id(required=True)
    session_id = Id(required=True)
    student_id = Id(required=True)
    tutor_id = Id(required=True)
    overall_rating = _rating(required=True)
    subject_knowledge_rating = _rating()
    communication_rating = _rating()
    patience_rating = _rating()
    engagement_rating = _rating()
    helpfulness_rating = _rating()
    free_text_feedback = Str(max_length=5000)
    is_first_session = StrictBool()
    would_recommend = StrictBool()
    improvement_areas = StrList(item_max_length=200, max_items=10)
    submitted_at = Timestamp(required=True)
