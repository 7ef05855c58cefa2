"""Students: field rules, through RECORD_TYPE.validate()."""

from datetime import UTC, date, datetime

import pytest

from etl_app.record_types.students import RECORD_TYPE

pytestmark = pytest.mark.unit

AS_OF = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def validate(**fields):
    return RECORD_TYPE.validate({"student_id": "s-1", **fields}, AS_OF)


def test_minimal_student():
    assert validate() == (
        {
            "student_id": "s-1",
            "name": None,
            "grade_level": None,
            "enrolled_on": None,
            "source": None,
            "event_time": None,
        },
        {},
    )


def test_full_student():
    data, errors = validate(name=" Bo ", grade_level=7, enrolled_on="2025-09-01", source="sis")
    assert errors == {}
    assert (data["name"], data["grade_level"], data["enrolled_on"]) == ("Bo", 7, date(2025, 9, 1))


@pytest.mark.parametrize("grade, ok", [(0, False), (1, True), (16, True), (17, False)])
def test_grade_level_bounds(grade, ok):
    assert list(validate(grade_level=grade)[1]) == ([] if ok else ["grade_level"])


@pytest.mark.parametrize("value", ["7", True, 7.5])
def test_grade_level_strict_int(value):
    assert validate(grade_level=value)[1] == {"grade_level": ["Not a valid integer."]}


def test_empty_name_is_null_and_max_length():
    assert validate(name="  ")[0]["name"] is None
    assert validate(name="n" * 200)[1] == {}
    assert validate(name="n" * 201)[1] == {"name": ["Longer than maximum length 200."]}


def test_future_enrolment_accepted():
    assert validate(enrolled_on="2027-01-01")[0]["enrolled_on"] == date(2027, 1, 1)


def test_student_id_required_and_checked():
    assert RECORD_TYPE.validate({}, AS_OF)[1] == {"student_id": ["Missing data for required field."]}
    assert list(RECORD_TYPE.validate({"student_id": "s" * 65}, AS_OF)[1]) == ["student_id"]


def test_unknown_field():
    assert validate(grade="7")[1] == {"grade": ["Unknown field."]}
