"""Feedback: derived fields at their boundaries."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from etl_app.record_types.feedback import RECORD_TYPE, derive

pytestmark = pytest.mark.unit

AS_OF = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
SESSION = {
    "scheduled_start": datetime(2026, 6, 10, 15, 0, tzinfo=UTC),
    "duration_minutes": 60,
    "tutor_id": "t1",
    "student_id": "s1",
}
BASE = {
    "feedback_id": "f1",
    "session_id": "x1",
    "student_id": "s1",
    "tutor_id": "t1",
    "overall_rating": 4,
    "submitted_at": "2026-06-10T18:00:00Z",
}


def derived(session=SESSION, **changes):
    data, errors = RECORD_TYPE.validate({**BASE, **changes}, AS_OF)
    assert errors == {}
    return derive(data, AS_OF, {"sessions": session})


@pytest.mark.parametrize(
    "rating, positive, poor",
    [(1, False, True), (2, False, True), (3, False, False), (4, True, False), (5, True, False)],
)
def test_positive_and_poor(rating, positive, poor):
    out = derived(overall_rating=rating)
    assert (out["is_positive"], out["is_poor"]) == (positive, poor)


@pytest.mark.parametrize(
    "ratings, avg, variance",
    [
        ({}, None, None),
        ({"patience_rating": 5}, 5.0, 0.0),
        ({"patience_rating": 2, "engagement_rating": 4}, 3.0, 1.0),
        (
            {
                "subject_knowledge_rating": 1,
                "communication_rating": 2,
                "patience_rating": 3,
                "engagement_rating": 4,
                "helpfulness_rating": 5,
            },
            3.0,
            2.0,
        ),
        ({"communication_rating": 4, "helpfulness_rating": 4, "patience_rating": None}, 4.0, 0.0),
        ({"communication_rating": 5, "helpfulness_rating": 4, "patience_rating": 4}, 13 / 3, 2 / 9),
    ],
)
def test_category_average_and_population_variance(ratings, avg, variance):
    out = derived(overall_rating=1, **ratings)
    if avg is None:
        assert out["avg_category_rating"] is None and out["category_variance"] is None
    else:
        assert out["avg_category_rating"] == pytest.approx(avg)
        assert out["category_variance"] == pytest.approx(variance)
        assert type(out["category_variance"]) is float and type(out["avg_category_rating"]) is float


@pytest.mark.parametrize("text, expected", [(None, False), ("", False), ("   ", False), ("ok", True), (" . ", True)])
def test_has_text_feedback(text, expected):
    assert derived(free_text_feedback=text)["has_text_feedback"] is expected


@pytest.mark.parametrize(
    "submitted, hours",
    [
        ("2026-06-10T16:00:00Z", 0.0),  # exactly at the scheduled end
        ("2026-06-10T18:30:00Z", 2.5),
        ("2026-06-10T15:30:00Z", -0.5),  # before the end: negative
        ("2026-06-10T14:00:00Z", -2.0),  # even before the start
        ("2026-06-10T12:00:00-05:00", 1.0),  # 17:00 UTC
        ("2026-06-11T16:00:00", 24.0),  # naive: UTC
    ],
)
def test_feedback_delay_hours(submitted, hours):
    assert derived(submitted_at=submitted)["feedback_delay_hours"] == pytest.approx(hours)


def test_feedback_delay_uses_scheduled_end_and_session_offset():
    session = {
        "scheduled_start": datetime(2026, 6, 10, 10, 0, tzinfo=timezone(timedelta(hours=-5))),
        "duration_minutes": 45,
    }
    # End is 15:45 UTC; submitted 16:00 UTC.
    assert derived(session=session, submitted_at="2026-06-10T16:00:00Z")["feedback_delay_hours"] == 0.25


def test_derive_returns_exactly_the_derived_fields():
    assert set(derived()) == {
        "is_positive",
        "is_poor",
        "avg_category_rating",
        "category_variance",
        "has_text_feedback",
        "feedback_delay_hours",
    }
