"""Sessions: derived fields at their boundaries."""

from datetime import UTC, datetime

import pytest

from etl_app.record_types.sessions import RECORD_TYPE, derive

pytestmark = pytest.mark.unit

AS_OF = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
BASE = {
    "session_id": "x1",
    "tutor_id": "t1",
    "student_id": "s1",
    "session_number": 2,
    "scheduled_start": "2026-06-10T15:00:00Z",
    "duration_minutes": 60,
    "subject": "Math",
    "session_type": "regular",
}


def derived(**changes):
    data, errors = RECORD_TYPE.validate({**BASE, **changes}, AS_OF)
    assert errors == {}
    return derive(data, AS_OF, {})


@pytest.mark.parametrize(
    "clock, expected",
    [
        ("04:59", "night"),
        ("05:00", "morning"),
        ("11:59", "morning"),
        ("12:00", "afternoon"),
        ("16:59", "afternoon"),
        ("17:00", "evening"),
        ("21:59", "evening"),
        ("22:00", "night"),
        ("00:00", "night"),
        ("23:59", "night"),
    ],
)
def test_time_of_day(clock, expected):
    assert derived(scheduled_start=f"2026-06-10T{clock}:00Z")["time_of_day"] == expected


@pytest.mark.parametrize(
    "start, weekend",
    [
        ("2026-06-12T23:59:59Z", False),
        ("2026-06-13T00:00:00Z", True),
        ("2026-06-14T23:59:59Z", True),
        ("2026-06-15T00:00:00Z", False),
    ],
)
def test_is_weekend(start, weekend):
    assert derived(scheduled_start=start)["is_weekend"] is weekend


def test_offset_timestamp_read_in_its_own_offset():
    out = derived(scheduled_start="2026-11-21T23:30:00-05:00")  # Saturday night locally, Sunday 04:30 UTC
    assert (out["is_weekend"], out["time_of_day"], out["week_of_year"], out["month_of_year"]) == (
        True,
        "night",
        47,
        11,
    )
    # The same instant given in UTC is Sunday 04:30.
    utc = derived(scheduled_start="2026-11-22T04:30:00Z")
    assert (utc["is_weekend"], utc["time_of_day"]) == (True, "night")


def test_offset_changes_week_and_month():
    # Monday 2026-06-01 02:00+05:00 is Sunday 2026-05-31 21:00 UTC.
    out = derived(scheduled_start="2026-06-01T02:00:00+05:00")
    assert (out["is_weekend"], out["week_of_year"], out["month_of_year"], out["time_of_day"]) == (
        False,
        23,
        6,
        "night",
    )
    out = derived(scheduled_start="2026-05-31T21:00:00Z")
    assert (out["is_weekend"], out["week_of_year"], out["month_of_year"], out["time_of_day"]) == (
        True,
        22,
        5,
        "evening",
    )


def test_naive_timestamp_taken_as_utc():
    out = derived(scheduled_start="2026-06-13T04:59:00")
    assert (out["is_weekend"], out["time_of_day"]) == (True, "night")


@pytest.mark.parametrize(
    "start, week, month",
    [
        ("2026-12-31T12:00:00Z", 53, 12),
        ("2021-01-01T12:00:00Z", 53, 1),
        ("2021-01-04T12:00:00Z", 1, 1),
        ("2025-12-29T12:00:00Z", 1, 12),
        ("2026-01-01T00:00:00Z", 1, 1),
        ("2026-06-10T15:00:00Z", 24, 6),
    ],
)
def test_iso_week_and_month(start, week, month):
    out = derived(scheduled_start=start)
    assert (out["week_of_year"], out["month_of_year"]) == (week, month)


@pytest.mark.parametrize(
    "changes, late, duration",
    [
        ({}, False, 60),  # no late_start_minutes: 0
        ({"late_start_minutes": 5}, False, 55),
        ({"late_start_minutes": 6}, True, 54),
        ({"actual_start": "2026-06-10T15:05:59Z"}, False, 55),  # computed 5
        ({"actual_start": "2026-06-10T15:06:00Z"}, True, 54),  # computed 6
        ({"actual_start": "2026-06-10T14:30:00Z"}, False, 60),  # early: 0
        ({"late_start_minutes": 60}, True, 0),
        ({"late_start_minutes": 90}, True, 0),  # never below 0
        ({"no_show": True}, False, 0),
        ({"no_show": True, "late_start_minutes": 10}, True, 0),
    ],
)
def test_late_start_and_actual_duration(changes, late, duration):
    out = derived(**changes)
    assert (out["is_late_start"], out["actual_duration_minutes"]) == (late, duration)


def test_derive_returns_exactly_the_derived_fields():
    assert set(derived()) == {
        "is_weekend",
        "time_of_day",
        "is_late_start",
        "actual_duration_minutes",
        "week_of_year",
        "month_of_year",
    }
