"""Tutors: field and business rules, through RECORD_TYPE.validate()."""

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from etl_app.record_types.tutors import RECORD_TYPE

pytestmark = pytest.mark.unit

AS_OF = datetime(2026, 6, 15, 23, 30, tzinfo=UTC)
VALID = {
    "tutor_id": "t-1",
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "age": 36,
    "location": "London",
    "education_level": "phd",
    "subjects": ["Math", "Physics"],
    "subject_type": "stem",
    "behavioral_archetype": "steady",
    "onboarding_date": "2025-01-10",
    "baseline_sessions_per_week": 12.5,
    "status": "active",
    "updated_at": "2026-06-14T08:00:00Z",
}


def validate(as_of=AS_OF, **changes):
    return RECORD_TYPE.validate({**VALID, **changes}, as_of)


def errors_of(**changes):
    data, errors = validate(**changes)
    assert data is None
    return errors


def test_valid_tutor_loads_python_values():
    data, errors = validate()
    assert errors == {}
    assert data["onboarding_date"] == date(2025, 1, 10)
    assert data["updated_at"] == datetime(2026, 6, 14, 8, tzinfo=UTC)
    assert data["subjects"] == ["Math", "Physics"]
    assert data["source"] is None and data["event_time"] is None


def test_minimal_tutor_gets_defaults():
    payload = {k: VALID[k] for k in ("tutor_id", "name", "email", "subjects", "onboarding_date", "status")}
    data, errors = RECORD_TYPE.validate(payload, AS_OF)
    assert errors == {}
    assert data["updated_at"] == AS_OF  # check_as_of default
    assert all(
        data[k] is None
        for k in (
            "age",
            "location",
            "education_level",
            "subject_type",
            "behavioral_archetype",
            "baseline_sessions_per_week",
        )
    )


@pytest.mark.parametrize("age, ok", [(15, False), (16, True), (100, True), (101, False)])
def test_age_bounds(age, ok):
    assert list(validate(age=age)[1]) == ([] if ok else ["age"])


@pytest.mark.parametrize("value, ok", [(-0.1, False), (0, True), (80, True), (80.01, False)])
def test_baseline_sessions_bounds(value, ok):
    assert list(validate(baseline_sessions_per_week=value)[1]) == ([] if ok else ["baseline_sessions_per_week"])


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@b.com", "a b@c.com"])
def test_bad_email(email):
    assert list(errors_of(email=email)) == ["email"]


def test_email_is_stripped_and_case_kept():
    assert validate(email="  Ada@Example.COM ")[0]["email"] == "Ada@Example.COM"


def address(local: int, total: int) -> str:
    """A valid-looking address of ``total`` characters, ``local`` of them before the "@"."""
    labels = total - local - 1 - len(".org")  # the domain before ".org": labels of 63 and dots
    domain = "".join("." if i % 64 == 63 else "d" for i in range(labels))
    return f"{'l' * local}@{domain}.org"


@pytest.mark.parametrize("local, total", [(64, 254), (1, 254), (64, 80)])
def test_email_at_the_rfc_5321_limits_is_kept(local, total):
    email = address(local, total)
    assert (len(email), len(email.partition("@")[0])) == (total, local)
    data, errors = validate(email=f"  {email} ")  # counted after stripping
    assert errors == {}
    assert data["email"] == email


@pytest.mark.parametrize(
    "local, total, message",
    [
        (64, 255, "Longer than maximum length 254."),
        (1, 255, "Longer than maximum length 254."),
        (65, 80, "The part before @ must be at most 64 characters."),
    ],
)
def test_email_past_the_rfc_5321_limits_is_refused(local, total, message):
    assert errors_of(email=address(local, total)) == {"email": [message]}


@pytest.mark.parametrize(
    "field, good, bad",
    [
        ("status", "on_leave", "Active"),
        ("education_level", "high_school", "college"),
        ("subject_type", "test_prep", "science"),
        ("behavioral_archetype", "at_risk", "lazy"),
    ],
)
def test_enums(field, good, bad):
    assert validate(**{field: good})[1] == {}
    assert list(errors_of(**{field: bad})) == [field]


def test_location_max_length():
    assert validate(location="x" * 200)[1] == {}
    assert list(errors_of(location="x" * 201)) == ["location"]


# ---- subjects ---------------------------------------------------------------------------


def test_subjects_deduplicated_case_insensitively_keeping_first_spelling():
    data, _ = validate(subjects=["Math", " physics ", "MATH", "Physics", "math", "Straße", "STRASSE"])
    assert data["subjects"] == ["Math", "physics", "Straße"]


@pytest.mark.parametrize("count, ok", [(0, False), (1, True), (20, True), (21, False)])
def test_subjects_item_count(count, ok):
    errors = validate(subjects=[f"s{i}" for i in range(count)])[1]
    assert errors == ({} if ok else {"subjects": ["Must have between 1 and 20 items."]})


def test_subjects_limit_applies_to_input_list_before_dedup():
    assert validate(subjects=["Math"] * 21)[1] == {"subjects": ["Must have between 1 and 20 items."]}
    assert validate(subjects=["Math"] * 20)[0]["subjects"] == ["Math"]


@pytest.mark.parametrize(
    "item, message",
    [
        ("", "Must not be empty."),
        ("  ", "Must not be empty."),
        (None, "Field may not be null."),
        ("x" * 101, "Longer than maximum length 100."),
        (5, "Not a valid string."),
    ],
)
def test_bad_subject_items(item, message):
    assert errors_of(subjects=["Math", item]) == {"subjects.1": [message]}


def test_subject_of_100_chars():
    assert validate(subjects=["x" * 100])[1] == {}


@pytest.mark.parametrize("value", ["Math", {"a": 1}, 3])
def test_subjects_must_be_a_list(value):
    assert errors_of(subjects=value) == {"subjects": ["Not a valid list."]}


# ---- onboarding_date vs as-of ------------------------------------------------------------


@pytest.mark.parametrize("day, ok", [("2026-06-15", True), ("2026-06-16", False), ("2026-06-14", True)])
def test_onboarding_date_not_after_as_of_utc_date(day, ok):
    errors = validate(onboarding_date=day)[1]
    assert errors == ({} if ok else {"onboarding_date": ["Must not be after the date the record was received."]})


def test_onboarding_date_uses_utc_date_of_as_of():
    # 2026-06-15T23:30-05:00 is 2026-06-16 04:30 UTC: the 16th is allowed.
    as_of = datetime(2026, 6, 15, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert validate(as_of=as_of, onboarding_date="2026-06-16")[1] == {}
    assert list(validate(as_of=as_of, onboarding_date="2026-06-17")[1]) == ["onboarding_date"]


def test_updated_at_given_is_kept():
    assert validate()[0]["updated_at"] == datetime(2026, 6, 14, 8, tzinfo=UTC)


@pytest.mark.parametrize("value", [None, ""])
def test_updated_at_null_or_empty_defaults_to_as_of(value):
    assert validate(updated_at=value)[0]["updated_at"] == AS_OF


def test_updated_at_with_spaces_around_it_is_an_error():
    """A timestamp is taken as sent, as its ``format: date-time`` says."""
    assert validate(updated_at=" 2026-06-14T08:00:00Z")[1]["updated_at"][0].startswith("Not a valid")
