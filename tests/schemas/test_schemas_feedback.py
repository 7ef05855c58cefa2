"""Feedback: field rules, through RECORD_TYPE.validate()."""

from datetime import UTC, datetime

import pytest

from etl_app.record_types.feedback import RECORD_TYPE
from schemas.feedback import CATEGORY_RATINGS

pytestmark = pytest.mark.unit

AS_OF = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
VALID = {
    "feedback_id": "f-1",
    "session_id": "sess-1",
    "student_id": "s-1",
    "tutor_id": "t-1",
    "overall_rating": 4,
    "submitted_at": "2026-06-10T17:00:00Z",
}


def validate(**changes):
    return RECORD_TYPE.validate({**VALID, **changes}, AS_OF)


def errors_of(**changes):
    data, errors = validate(**changes)
    assert data is None
    return errors


def test_minimal_feedback():
    data, errors = validate()
    assert errors == {}
    assert data["submitted_at"] == datetime(2026, 6, 10, 17, tzinfo=UTC)
    assert all(
        data[name] is None
        for name in (
            *CATEGORY_RATINGS,
            "free_text_feedback",
            "is_first_session",
            "would_recommend",
            "improvement_areas",
        )
    )


def test_parent_ref():
    (parent,) = RECORD_TYPE.parents
    assert (parent.field, parent.record_type, parent.must_match) == (
        "session_id",
        "sessions",
        (("tutor_id", "tutor_id"), ("student_id", "student_id")),
    )


@pytest.mark.parametrize("field", ["overall_rating", *CATEGORY_RATINGS])
@pytest.mark.parametrize(
    "value, ok",
    [(0, False), (1, True), (5, True), (6, False), (4.5, False), ("4", False), (True, False), (4.0, True)],
)
def test_ratings(field, value, ok):
    assert list(validate(**{field: value})[1]) == ([] if ok else [field])


@pytest.mark.parametrize(
    "field", ["feedback_id", "session_id", "student_id", "tutor_id", "overall_rating", "submitted_at"]
)
def test_null_required(field):
    assert errors_of(**{field: None}) == {field: ["Field may not be null."]}


def test_free_text_length_and_strip():
    assert validate(free_text_feedback=" " + "x" * 5000 + "\n")[0]["free_text_feedback"] == "x" * 5000
    assert errors_of(free_text_feedback="x" * 5001) == {"free_text_feedback": ["Longer than maximum length 5000."]}
    assert validate(free_text_feedback="   ")[0]["free_text_feedback"] is None


def test_free_text_nul_and_surrogate():
    assert errors_of(free_text_feedback="bad\x00") == {"free_text_feedback": ["Must not contain NUL characters."]}
    assert list(errors_of(free_text_feedback="\ud83d alone")) == ["free_text_feedback"]


@pytest.mark.parametrize("count, ok", [(0, True), (10, True), (11, False)])
def test_improvement_areas_count(count, ok):
    data, errors = validate(improvement_areas=[f"area {i}" for i in range(count)])
    assert errors == ({} if ok else {"improvement_areas": ["Must have between 0 and 10 items."]})
    assert ok is False or len(data["improvement_areas"]) == count


def test_improvement_areas_items():
    assert validate(improvement_areas=[" pace ", "pace", "x" * 200])[0]["improvement_areas"] == [
        "pace",
        "pace",
        "x" * 200,
    ]
    assert errors_of(improvement_areas=["ok", "", "x" * 201, None]) == {
        "improvement_areas.1": ["Must not be empty."],
        "improvement_areas.2": ["Longer than maximum length 200."],
        "improvement_areas.3": ["Field may not be null."],
    }
    assert errors_of(improvement_areas="pace") == {"improvement_areas": ["Not a valid list."]}


@pytest.mark.parametrize("field", ["is_first_session", "would_recommend"])
def test_optional_booleans(field):
    assert validate(**{field: True})[0][field] is True
    assert validate(**{field: None})[0][field] is None
    assert list(errors_of(**{field: "yes"})) == [field]


def test_submitted_at_offset_kept():
    value = validate(submitted_at="2026-06-10T12:00:00-05:00")[0]["submitted_at"]
    assert value == datetime(2026, 6, 10, 17, tzinfo=UTC) and value.hour == 12
