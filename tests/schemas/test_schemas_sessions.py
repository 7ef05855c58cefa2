"""Sessions: field and business rules, through RECORD_TYPE.validate()."""

from datetime import UTC, datetime, timedelta

import pytest

from etl_app.record_types.sessions import RECORD_TYPE

pytestmark = pytest.mark.unit

AS_OF = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
VALID = {
    "session_id": "sess-1",
    "tutor_id": "t-1",
    "student_id": "s-1",
    "session_number": 3,
    "scheduled_start": "2026-06-10T15:00:00Z",
    "duration_minutes": 60,
    "subject": "Math",
    "session_type": "regular",
}


def validate(**changes):
    return RECORD_TYPE.validate({**VALID, **changes}, AS_OF)


def errors_of(**changes):
    data, errors = validate(**changes)
    assert data is None
    return errors


def test_minimal_session_defaults():
    data, errors = validate()
    assert errors == {}
    assert data["scheduled_start"] == datetime(2026, 6, 10, 15, tzinfo=UTC)
    assert (data["no_show"], data["technical_issues"], data["tutor_initiated_reschedule"]) == (
        False,
        False,
        False,
    )
    assert data["is_first_session"] is False
    assert (
        data["actual_start"],
        data["late_start_minutes"],
        data["engagement_score"],
        data["learning_objectives_met"],
    ) == (None, None, None, None)


def test_null_for_defaulted_bool_is_default():
    assert validate(no_show=None, technical_issues=None)[0]["no_show"] is False


def test_parents():
    assert [(p.field, p.record_type) for p in RECORD_TYPE.parents] == [
        ("tutor_id", "tutors"),
        ("student_id", "students"),
    ]


# ---- is_first_session --------------------------------------------------------------------


@pytest.mark.parametrize(
    "number, given, expected",
    [(1, None, True), (2, None, False), (1, True, True), (1, False, False), (5, False, False)],
)
def test_is_first_session_default_and_given(number, given, expected):
    payload = {"session_number": number} if given is None else {"session_number": number, "is_first_session": given}
    assert validate(**payload)[0]["is_first_session"] is expected


def test_is_first_session_true_with_later_number_is_error():
    assert errors_of(session_number=2, is_first_session=True) == {
        "is_first_session": ["Must not be true when session_number is greater than 1."]
    }


@pytest.mark.parametrize("number, ok", [(0, False), (-1, False), (1, True), (2**31 - 1, True), (2**31, False)])
def test_session_number_bounds(number, ok):
    assert list(validate(session_number=number)[1]) == ([] if ok else ["session_number"])


# ---- actual_start, no_show, late_start_minutes ---------------------------------------------


@pytest.mark.parametrize(
    "actual, ok",
    [
        ("2026-06-11T15:00:00Z", True),  # +24 h exactly
        ("2026-06-11T15:00:01Z", False),
        ("2026-06-09T15:00:00Z", True),  # -24 h exactly
        ("2026-06-09T14:59:59Z", False),
        ("2026-06-11T10:00:00-05:00", True),  # = +24 h in UTC
        ("2026-06-11T10:00:01-05:00", False),
    ],
)
def test_actual_start_within_24_hours(actual, ok):
    errors = validate(actual_start=actual)[1]
    assert errors == ({} if ok else {"actual_start": ["Must be within 24 hours of scheduled_start."]})


def test_no_show_with_actual_start_is_error():
    assert errors_of(no_show=True, actual_start="2026-06-10T15:02:00Z") == {
        "actual_start": ["Must be null when no_show is true."]
    }


def test_no_show_without_actual_start_is_fine():
    data, errors = validate(no_show=True, actual_start=None)
    assert errors == {} and data["late_start_minutes"] is None


@pytest.mark.parametrize(
    "actual, expected",
    [
        ("2026-06-10T15:00:00Z", 0),
        ("2026-06-10T15:05:59Z", 5),  # floored
        ("2026-06-10T15:06:00Z", 6),
        ("2026-06-10T14:50:00Z", 0),  # early: never below 0
        ("2026-06-10T14:59:59.5Z", 0),
        ("2026-06-10T10:07:30-05:00", 7),  # offsets compared as instants
        ("2026-06-11T15:00:00Z", 1440),
    ],
)
def test_late_start_minutes_computed(actual, expected):
    assert validate(actual_start=actual)[0]["late_start_minutes"] == expected


def test_late_start_minutes_given_is_kept():
    assert validate(actual_start="2026-06-10T15:20:00Z", late_start_minutes=3)[0]["late_start_minutes"] == 3


def test_late_start_minutes_absent_without_actual_start_stays_null():
    assert validate()[0]["late_start_minutes"] is None


@pytest.mark.parametrize("value, ok", [(-1, False), (0, True), (5, True), ("5", False), (5.5, False)])
def test_late_start_minutes_values(value, ok):
    assert list(validate(late_start_minutes=value)[1]) == ([] if ok else ["late_start_minutes"])


# ---- other fields --------------------------------------------------------------------------


@pytest.mark.parametrize("value, ok", [(4, False), (5, True), (480, True), (481, False), (True, False), ("60", False)])
def test_duration_minutes_bounds(value, ok):
    assert list(validate(duration_minutes=value)[1]) == ([] if ok else ["duration_minutes"])


@pytest.mark.parametrize(
    "value, ok",
    [
        (-0.01, False),
        (0, True),
        (0.0, True),
        (1, True),
        (1.0001, False),
        (float("nan"), False),
        (float("inf"), False),
        ("0.5", False),
    ],
)
def test_engagement_score_bounds(value, ok):
    assert list(validate(engagement_score=value)[1]) == ([] if ok else ["engagement_score"])


@pytest.mark.parametrize("value", ["regular", "trial", "makeup", "group", "exam_prep"])
def test_session_types(value):
    assert validate(session_type=value)[1] == {}


def test_bad_session_type():
    assert list(errors_of(session_type="lecture")) == ["session_type"]


def test_subject_length():
    assert validate(subject="x" * 100)[1] == {}
    assert errors_of(subject="x" * 101) == {"subject": ["Longer than maximum length 100."]}


@pytest.mark.parametrize(
    "field",
    [
        "no_show",
        "technical_issues",
        "tutor_initiated_reschedule",
        "learning_objectives_met",
        "is_first_session",
    ],
)
@pytest.mark.parametrize("value", [0, 1, "true", "false"])
def test_booleans_are_strict(field, value):
    assert errors_of(**{field: value}) == {field: ["Not a valid boolean (use true or false)."]}


@pytest.mark.parametrize(
    "field",
    [
        "session_id",
        "tutor_id",
        "student_id",
        "session_number",
        "scheduled_start",
        "duration_minutes",
        "subject",
        "session_type",
    ],
)
def test_null_required(field):
    assert errors_of(**{field: None}) == {field: ["Field may not be null."]}


def test_scheduled_start_offset_kept():
    value = validate(scheduled_start="2026-11-21T23:30:00-05:00")[0]["scheduled_start"]
    assert value.utcoffset() == timedelta(hours=-5) and value.hour == 23
