"""Shared field rules (schemas.common), exercised through the registry's validate()."""

from datetime import UTC, date, datetime, timedelta

import pytest

from etl_app.config import Settings
from etl_app.db import LINEAGE_FIELDS
from etl_app.record_types import get_registry
from etl_app.record_types.students import RECORD_TYPE as STUDENTS
from etl_app.record_types.tutors import RECORD_TYPE as TUTORS

pytestmark = pytest.mark.unit

AS_OF = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
TUTOR = {
    "tutor_id": "t-1",
    "name": "Ada",
    "email": "ada@example.com",
    "subjects": ["Math"],
    "onboarding_date": "2026-01-01",
    "status": "active",
}


def tutor_errors(**changes):
    data, errors = TUTORS.validate({**TUTOR, **changes}, AS_OF)
    assert data is None
    return errors


def tutor_ok(**changes):
    data, errors = TUTORS.validate({**TUTOR, **changes}, AS_OF)
    assert errors == {}
    return data


def test_registry_has_the_four_types():
    assert [t.name for t in get_registry()] == ["tutors", "students", "sessions", "feedback"]


def test_non_object_payload():
    assert STUDENTS.validate(["student_id", "s1"], AS_OF) == (
        None,
        {"_schema": ["Each record must be a JSON object."]},
    )


# ---- strings -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a\x00b", "\x00"])
def test_nul_in_string_is_field_error(value):
    assert tutor_errors(name=value) == {"name": ["Must not contain NUL characters."]}


@pytest.mark.parametrize("field", ["name", "location", "tutor_id", "source", "onboarding_date", "updated_at"])
def test_lone_surrogate_is_field_error(field):
    assert tutor_errors(**{field: "x\ud800"}) == {field: ["Must be valid Unicode (no lone surrogates)."]}


def test_surrogate_and_nul_in_list_items():
    assert tutor_errors(subjects=["ok", "\udfff", "a\x00"]) == {
        "subjects.1": ["Must be valid Unicode (no lone surrogates)."],
        "subjects.2": ["Must not contain NUL characters."],
    }


def test_valid_non_ascii_text_is_kept():
    assert tutor_ok(name="  Zoë 😀 O'Brien'); DROP TABLE tutors;-- ")["name"] == (
        "Zoë 😀 O'Brien'); DROP TABLE tutors;--"
    )


def test_strings_are_stripped_and_empty_optional_is_null():
    data = tutor_ok(name="  Ada  ", location="   ", source="\t", education_level="")
    assert (data["name"], data["location"], data["source"], data["education_level"]) == (
        "Ada",
        None,
        None,
        None,
    )


@pytest.mark.parametrize("value", ["", "   ", "\n\t"])
def test_empty_required_string_is_error(value):
    assert tutor_errors(name=value) == {"name": ["Must not be empty."]}


def test_string_length_counts_after_strip():
    assert tutor_ok(name=" " + "x" * 200 + " ")["name"] == "x" * 200
    assert tutor_errors(name="x" * 201) == {"name": ["Longer than maximum length 200."]}


@pytest.mark.parametrize("value", [5, 1.5, True, ["a"], {"a": 1}])
def test_non_string_for_string_field(value):
    assert tutor_errors(name=value) == {"name": ["Not a valid string."]}


# ---- ids -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "A-z_0.9:x", "x" * 64, "  padded  "])
def test_good_ids(value):
    assert tutor_ok(tutor_id=value)["tutor_id"] == value.strip()


@pytest.mark.parametrize("value", ["x" * 65, "a b", "a/b", "a;b", "ü", "../etc", "a\nb", "١٢"])
def test_bad_ids(value):
    assert list(tutor_errors(tutor_id=value)) == ["tutor_id"]


# ---- unknown, null, missing -------------------------------------------------------------


def test_unknown_field_rejected():
    assert tutor_errors(nickname="x") == {"nickname": ["Unknown field."]}


@pytest.mark.parametrize(
    "key, reported",
    [("a\x00b", "a\\x00b"), ("bad\ud800", "bad\\ud800"), ("k" * 150, "k" * 100 + "...")],
)
def test_unknown_field_names_are_escaped(key, reported):
    errors = tutor_errors(**{key: 1})
    assert errors == {reported: ["Unknown field."]}
    reported.encode("utf-8")


def test_source_and_event_time_are_accepted():
    data = tutor_ok(source="  crm export ", event_time="2026-06-01T10:00:00+02:00")
    assert data["source"] == "crm export"
    assert data["event_time"] == datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def test_source_too_long():
    assert tutor_errors(source="s" * 201) == {"source": ["Longer than maximum length 200."]}


@pytest.mark.parametrize("field", ["tutor_id", "name", "email", "subjects", "onboarding_date", "status"])
def test_null_for_required_field(field):
    assert tutor_errors(**{field: None}) == {field: ["Field may not be null."]}


@pytest.mark.parametrize("field", ["tutor_id", "name", "email", "subjects", "onboarding_date", "status"])
def test_missing_required_field(field):
    payload = {k: v for k, v in TUTOR.items() if k != field}
    assert TUTORS.validate(payload, AS_OF) == (None, {field: ["Missing data for required field."]})


def test_null_for_optional_field_is_null():
    assert tutor_ok(age=None, location=None, event_time=None)["age"] is None


# ---- integers, numbers, booleans -------------------------------------------------------


@pytest.mark.parametrize("value", ["30", "30.0", True, False, 30.5, float("nan"), float("inf"), [30]])
def test_strict_int_rejects(value):
    assert tutor_errors(age=value) == {"age": ["Not a valid integer."]}


def test_strict_int_accepts_integral_float():
    data = tutor_ok(age=30.0)
    assert data["age"] == 30 and type(data["age"]) is int


def test_strict_int_must_fit_postgres_integer():
    assert STUDENTS.validate({"student_id": "s", "grade_level": 2**31}, AS_OF)[1] == {
        "grade_level": ["Must be between -2147483648 and 2147483647."]
    }
    assert list(STUDENTS.validate({"student_id": "s", "grade_level": 10**400}, AS_OF)[1]) == ["grade_level"]


@pytest.mark.parametrize(
    "value, message",
    [
        (float("nan"), "Must be a finite number (no NaN or Infinity)."),
        (float("inf"), "Must be a finite number (no NaN or Infinity)."),  # what json.loads("1e400") gives
        (float("-inf"), "Must be a finite number (no NaN or Infinity)."),
        (10**400, "Must be a finite number (no NaN or Infinity)."),
        ("5", "Not a valid number."),
        ("NaN", "Not a valid number."),
        (True, "Not a valid number."),
        (False, "Not a valid number."),
    ],
)
def test_number_rejects(value, message):
    assert tutor_errors(baseline_sessions_per_week=value) == {"baseline_sessions_per_week": [message]}


def test_number_gives_float():
    data = tutor_ok(baseline_sessions_per_week=3)
    assert data["baseline_sessions_per_week"] == 3.0 and type(data["baseline_sessions_per_week"]) is float


def test_json_1e400_is_rejected():
    import json

    payload = json.loads('{"baseline_sessions_per_week": 1e400}')
    assert list(tutor_errors(**payload)) == ["baseline_sessions_per_week"]


# ---- timestamps and days ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-06-01T10:00:00", datetime(2026, 6, 1, 10, tzinfo=UTC)),  # naive: UTC
        ("2026-06-01 10:00", datetime(2026, 6, 1, 10, tzinfo=UTC)),
        ("2026-06-01t10:00:00z", datetime(2026, 6, 1, 10, tzinfo=UTC)),
        ("2026-06-01T10:00:00.123456789Z", datetime(2026, 6, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-06-01T10:00:00+0530", datetime(2026, 6, 1, 4, 30, tzinfo=UTC)),
        ("2026-06-01T10:00:00-05", datetime(2026, 6, 1, 15, tzinfo=UTC)),
        ("2026-06-01T10:00:00+15:59", datetime(2026, 5, 31, 18, 1, tzinfo=UTC)),  # PostgreSQL's widest
        ("2026-06-01T10:00:00-1559", datetime(2026, 6, 2, 1, 59, tzinfo=UTC)),
    ],
)
def test_timestamp_formats(text, expected):
    value = tutor_ok(updated_at=text)["updated_at"]
    assert value == expected and value.tzinfo is not None


def test_naive_timestamp_is_utc():
    assert tutor_ok(updated_at="2026-06-01T10:00:00")["updated_at"].utcoffset() == timedelta(0)


def test_timestamp_keeps_its_offset():
    value = tutor_ok(updated_at="2026-11-21T23:30:00-05:00")["updated_at"]
    assert value.utcoffset() == timedelta(hours=-5)
    assert (value.day, value.hour) == (21, 23)


@pytest.mark.parametrize(
    "text",
    [
        "2026-06-01",
        "20260601T1000Z",
        "2026-W22-1T10:00",
        "2026-06-01x10:00",
        "2026-06-01T24:00",
        "2026-02-30T10:00",
        "2026-06-01T10:00+24:00",
        "2026-06-01T10:00+16:00",  # Python reads it; PostgreSQL's timestamptz refuses it
        "2026-06-01T10:00:00-20",
        "2026-06-01T10:00+05:60",
        "yesterday",
        "1717236000",
        "２０２６-06-01T10:00",
    ],
)
def test_bad_timestamps(text):
    assert list(tutor_errors(updated_at=text)) == ["updated_at"]


@pytest.mark.parametrize("value", [1717236000, 1.5, True])
def test_timestamp_must_be_a_string(value):
    assert list(tutor_errors(updated_at=value)) == ["updated_at"]


@pytest.mark.parametrize("year, ok", [(1899, False), (1900, True), (2100, True), (2101, False)])
def test_timestamp_year_window(year, ok):
    data, errors = TUTORS.validate({**TUTOR, "updated_at": f"{year}-06-01T00:00:00Z"}, AS_OF)
    if ok:
        assert data["updated_at"].year == year
    else:
        assert errors == {"updated_at": ["Year must be between 1900 and 2100."]}


@pytest.mark.parametrize("year, ok", [(1899, False), (1900, True), (2100, True), (2101, False)])
def test_day_year_window(year, ok):
    data, errors = STUDENTS.validate({"student_id": "s", "enrolled_on": f"{year}-01-31"}, AS_OF)
    if ok:
        assert data["enrolled_on"] == date(year, 1, 31)
    else:
        assert errors == {"enrolled_on": ["Year must be between 1900 and 2100."]}


@pytest.mark.parametrize("text", ["2026-6-1", "20260601", "2026-06-01T00:00", "2026-02-29", "01/06/2026", "2026-W22-1"])
def test_bad_days(text):
    errors = STUDENTS.validate({"student_id": "s", "enrolled_on": text}, AS_OF)[1]
    assert errors == {"enrolled_on": ["Not a valid date (YYYY-MM-DD)."]}


# ---- loaded dict shape ---------------------------------------------------------------


MINIMAL = {
    "tutors": TUTOR,
    "students": {"student_id": "s1"},
    "sessions": {
        "session_id": "x1",
        "tutor_id": "t1",
        "student_id": "s1",
        "session_number": 1,
        "scheduled_start": "2026-06-01T10:00:00Z",
        "duration_minutes": 60,
        "subject": "Math",
        "session_type": "regular",
    },
    "feedback": {
        "feedback_id": "f1",
        "session_id": "x1",
        "student_id": "s1",
        "tutor_id": "t1",
        "overall_rating": 4,
        "submitted_at": "2026-06-01T12:00:00Z",
    },
}
PARENT_ROWS = {"sessions": {"scheduled_start": datetime(2026, 6, 1, 10, tzinfo=UTC), "duration_minutes": 60}}


@pytest.mark.parametrize("record_type", list(get_registry()), ids=lambda t: t.name)
def test_loaded_and_derived_keys_cover_every_column(record_type):
    data, errors = record_type.validate(dict(MINIMAL[record_type.name]), AS_OF)
    assert errors == {}
    derived = record_type.derive(data, AS_OF, PARENT_ROWS)
    columns = [c.name for c in record_type.table.columns]
    looked_up = {"lookup_status", "looked_up_at"} if record_type.lookups else set()
    for declare in record_type.lookups:  # filled by enrich's lookups (etl_app.pipeline.lookups)
        looked_up |= set(declare(Settings()).fills)
    kept = {"extra"}  # unknown fields a contract keeps (etl_app.record_types.contract); in data only then
    assert set(data) | set(derived) | looked_up | set(LINEAGE_FIELDS) | kept == set(columns)
    assert not set(data) & (set(derived) | looked_up)
    assert "source" in data and columns.count("source") == 1
    allowed = (str, int, float, bool, list, date, type(None))
    assert all(isinstance(v, allowed) for v in data.values())
    assert all(v.tzinfo is not None for v in data.values() if isinstance(v, datetime))
