"""Tutors: derived fields at their boundaries."""

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from etl_app.record_types.tutors import RECORD_TYPE, derive

pytestmark = pytest.mark.unit

AS_OF = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def tutor(days_ago=100, subjects=("Math",), updated_at=AS_OF):
    return {
        "onboarding_date": AS_OF.date() - timedelta(days=days_ago),
        "subjects": list(subjects),
        "updated_at": updated_at,
    }


@pytest.mark.parametrize(
    "days, is_new, level",
    [
        (0, True, "junior"),
        (29, True, "junior"),
        (30, False, "junior"),
        (89, False, "junior"),
        (90, False, "mid"),
        (364, False, "mid"),
        (365, False, "senior"),
        (3000, False, "senior"),
    ],
)
def test_tenure_boundaries(days, is_new, level):
    out = derive(tutor(days), AS_OF, {})
    assert (out["tenure_days"], out["is_new_tutor"], out["experience_level"]) == (days, is_new, level)


def test_tenure_uses_utc_date_of_as_of():
    # 20:00-05:00 on the 15th is the 16th in UTC.
    as_of = datetime(2026, 6, 15, 20, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert derive({**tutor(), "onboarding_date": date(2026, 6, 1)}, as_of, {})["tenure_days"] == 15


def test_subject_count_after_dedup():
    data, _ = RECORD_TYPE.validate(
        {
            "tutor_id": "t",
            "name": "A",
            "email": "a@b.co",
            "subjects": ["Math", "math", "Art"],
            "onboarding_date": "2026-01-01",
            "status": "active",
        },
        AS_OF,
    )
    assert derive(data, AS_OF, {})["subject_count"] == 2


@pytest.mark.parametrize(
    "updated_at, expected",
    [
        (AS_OF, True),
        (datetime(2026, 6, 15, 0, 0, tzinfo=UTC), True),
        (datetime(2026, 6, 14, 23, 59, 59, tzinfo=UTC), False),
        (datetime(2026, 6, 16, 0, 0, tzinfo=UTC), False),
        # 2026-06-14 21:00-05:00 is 2026-06-15 02:00 UTC: today.
        (datetime(2026, 6, 14, 21, 0, tzinfo=timezone(timedelta(hours=-5))), True),
        # 2026-06-15 01:00+02:00 is 2026-06-14 23:00 UTC: not today.
        (datetime(2026, 6, 15, 1, 0, tzinfo=timezone(timedelta(hours=2))), False),
    ],
)
def test_is_active_today(updated_at, expected):
    assert derive(tutor(updated_at=updated_at), AS_OF, {})["is_active_today"] is expected


def test_derive_returns_exactly_the_derived_fields():
    assert set(derive(tutor(), AS_OF, {})) == {
        "tenure_days",
        "is_new_tutor",
        "experience_level",
        "subject_count",
        "is_active_today",
    }


def test_defaulted_updated_at_is_active_today():
    data, _ = RECORD_TYPE.validate(
        {
            "tutor_id": "t",
            "name": "A",
            "email": "a@b.co",
            "subjects": ["Math"],
            "onboarding_date": "2026-01-01",
            "status": "active",
        },
        AS_OF,
    )
    assert derive(data, AS_OF, {})["is_active_today"] is True
