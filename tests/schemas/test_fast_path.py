"""The fast path (schemas.fast) gives the verdict and the loaded values of the marshmallow schema.

For each built-in type, hypothesis draws valid payloads from the schema's fields (ids padded
with Unicode whitespace, strings with control characters, every timestamp spelling the schema
allows, boundary numbers, sessions' start gaps around 24 h) and mutated copies of them (a field
set to a wrong type, an edge string or number, NaN, infinities, huge integers, ``5.0``,
``Decimal``, a date alone, nine-digit fractions, ``"id\\n"``, null, removed, or an unknown field
added). Whenever the fast path accepts, marshmallow accepts too and loads equal values of the
same types (compared by ``repr``, so ``5`` is not ``5.0`` and offsets must match); whenever
marshmallow refuses, the fast path refuses. A valid payload as generated is always accepted by
the fast path itself (else it would silently fall back on the slow path).

Derandomized (the same examples on every run, no example database): 4 types x 300 examples x
(1 valid + 8 mutated) = 10,800 payloads, plus every field of a fixed valid record set to each of
the 76 edge values or removed (4,316 more), compared on every run.

Schema contracts (etl_app.record_types.contract) run only on what the fast path refuses; so every
payload the fast path accepts is also checked to be one no contract would change (no unknown
field to keep or drop, no wrong-typed optional value to null).
"""

from __future__ import annotations

import string
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

import marshmallow as ma
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import validate

from etl_app.record_types import SchemaContract, get_registry
from etl_app.record_types import contract as contracts
from schemas.common import Day, Id, Number, Str, StrictBool, StrictInt, StrList, Timestamp
from schemas.fast import fast_loader

pytestmark = pytest.mark.unit

BUILTIN = ("tutors", "students", "sessions", "feedback")
REGISTRY = get_registry()  # loaded before any draw (importing the types must not happen inside a strategy)
EXAMPLES = 300
MUTATIONS = 8
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

ID_CHARS = string.ascii_letters + string.digits + "_.:-"
# what str.strip removes (and a few it does not: NBSP-like format characters are not whitespace)
SPACES = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u00a0", "\u2028", "\u3000"]
NOT_SPACES = ["\x00", "\x01", "\x7f", "\u200b", "\ufeff", "\ud800", "\udfff", "é", "😀"]
EDGE_VALUES: list[Any] = [
    None,
    "",
    " ",
    " " * 65,
    "\x00",
    "a\x00b",
    "\ud800",
    "id\n",
    "\nid",
    "id\x01",
    "5",
    "true",
    "Active",
    "regular ",
    "x" * 101,
    "x" * 201,
    "y" * 300,
    "a@b.co",
    "ada@example.com",
    "@example.com",
    "a" * 65 + "@example.com",
    0,
    1,
    -1,
    4,
    5,
    16,
    100,
    480,
    481,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**63,
    10**400,
    0.0,
    -0.0,
    0.5,
    1.0,
    5.0,
    5.5,
    80.0,
    80.000001,
    1.0000000000000002,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    True,
    False,
    [],
    [""],
    [None],
    ["a", "A"],
    ["a"] * 21,
    {},
    {"a": 1},
    Decimal("1.5"),
    Decimal("3"),
    "2024-01-01",
    "2024-02-30",
    "2024-01-01T10:00",
    "2024-01-01t10:00z",
    "2024-01-01 10:00:00.123456789+05:30",
    "2024-01-01T10:00:00.9999999Z",
    "2024-01-01T10:00:00+0530",
    "2024-01-01T10:00:00+05",
    "2024-01-01T10:00:00+15:59",
    "2024-01-01T10:00:00-16:00",
    "2024-01-01T10:00:00+2000",
    "2024-01-01T10:00:00+10:60",
    "2024-01-01T24:00:00",
    "2024-W01-1",
    "20240101T1000",
    "1899-12-31T23:59:59Z",
    "2101-01-01T00:00",
    " 2024-01-01T10:00",
    "2024-01-01T10:00 ",
    "２０２４-01-01",
]


def repr_typed(value: Any) -> str:
    """``repr`` pins types and values: 5 vs 5.0, str vs list, each datetime's offset."""
    return repr(value)


# -- valid values, drawn from the schema's own fields -------------------------------------------


def _limits(field: ma.fields.Field) -> tuple[Any, Any, Any]:
    lo = hi = choices = None
    for v in field.validators:
        if isinstance(v, validate.Range):
            lo, hi = v.min, v.max
        elif isinstance(v, validate.OneOf):
            choices = list(v.choices)
    return lo, hi, choices


def padded(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pad = st.text(st.sampled_from(SPACES), max_size=3)
    return st.builds(lambda a, c, b: a + c + b, pad, core, pad)


def text_value(max_length: int) -> st.SearchStrategy[str]:
    # any character but NUL and lone surrogates (which are errors), control characters included
    char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
    edge = st.sampled_from(["a" * max_length, "é" * max_length, "a\x01b", "a\u200bb", "\x1fa\x1f", "x\ny"])
    core = st.one_of(edge, st.text(char, min_size=1, max_size=min(max_length, 30)))
    return padded(core).filter(lambda s: s.strip() and len(s.strip()) <= max_length)


def timestamp_value(lo: int = 1900, hi: int = 2100) -> st.SearchStrategy[str]:
    moment = st.datetimes(datetime(lo, 1, 1), datetime(hi, 12, 31, 23, 59, 59))
    return st.builds(format_timestamp, moment, st.integers(0, 9), st.sampled_from("Tt "), offset_value())


def offset_value() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["", "Z", "z", "+00:00", "-00:00", "+05:30", "-12:00", "+14", "+0545"]),
        st.builds(
            lambda h, m, sign: f"{sign}{h:02d}:{m:02d}", st.integers(0, 15), st.integers(0, 59), st.sampled_from("+-")
        ),
    )


def format_timestamp(moment: datetime, digits: int, sep: str, offset: str) -> str:
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M")
    if digits or moment.second or moment.microsecond:
        text += moment.strftime(":%S")
        if digits:
            text += "." + f"{moment.microsecond:06d}{moment.microsecond % 997:03d}"[:digits]
    return text + offset


def field_value(field: ma.fields.Field) -> st.SearchStrategy[Any]:
    """A valid value of one field (some optional fields absent, null or blank)."""
    lo, hi, choices = _limits(field)
    kind = type(field)
    if kind is Id:
        value = padded(st.text(st.sampled_from(ID_CHARS), min_size=1, max_size=64))
    elif kind is Str and choices:
        value = padded(st.sampled_from(choices))
    elif kind is Str and any(isinstance(v, validate.Email) for v in field.validators):
        value = padded(st.sampled_from(["ada@example.com", "A.B+c@sub.example.org", "x@y.io", "é@example.fr"]))
    elif kind is Str:
        value = text_value(field.max_length)
    elif kind is StrictInt:
        lo = -(2**31) if lo is None else lo
        hi = 2**31 - 1 if hi is None else hi
        value = st.one_of(st.sampled_from([lo, hi]), st.integers(lo, hi))
    elif kind is Number:
        value = st.one_of(
            st.sampled_from([lo, hi, float(lo), float(hi)]),
            st.floats(lo, hi, allow_nan=False),
            st.integers(int(lo), int(hi)),
        )
    elif kind is StrictBool:
        value = st.booleans()
    elif kind is Timestamp:
        value = timestamp_value()
    elif kind is Day:
        value = st.dates(date(1900, 1, 1), date(2100, 12, 31)).map(date.isoformat)
    elif kind is StrList:
        item = text_value(field.inner.max_length)
        full = st.lists(
            padded(st.sampled_from(["Math", "math", "MATH", "Physics", "é"])),
            min_size=field.max_items,
            max_size=field.max_items,
        )
        value = st.one_of(st.lists(item, min_size=field.min_items, max_size=3), full)
    else:
        raise AssertionError(f"no strategy for {kind.__name__}")
    if field.required:
        return value
    blank = st.sampled_from(["", "   "]) if kind in (Id, Str, Timestamp, Day) else st.nothing()
    return st.one_of(value, value, value, st.none(), blank, st.just(ABSENT))


ABSENT = object()


@cache
def field_values(name: str) -> list[tuple[str, st.SearchStrategy[Any]]]:
    return [(key, field_value(field)) for key, field in get_registry()[name].loader.load_fields.items()]


@st.composite
def valid_payload(draw: st.DrawFn, name: str) -> dict[str, Any]:
    payload = {}
    for key, strategy in field_values(name):
        value = draw(strategy)
        if value is not ABSENT:
            payload[key] = value
    if name == "sessions":
        sessions_rules(draw, payload)
    return payload


def sessions_rules(draw: st.DrawFn, payload: dict[str, Any]) -> None:
    """Keep drawn sessions valid across fields, with start gaps around the 24 h limit."""
    start = draw(st.datetimes(datetime(1901, 1, 1), datetime(2099, 12, 31)))
    payload["scheduled_start"] = format_timestamp(start, 0, "T", "Z")
    if payload.get("no_show") is True:
        payload.pop("actual_start", None)
    elif "actual_start" in payload and payload["actual_start"] not in (None, "", "   "):
        gap = draw(st.integers(-24 * 3600, 24 * 3600))
        payload["actual_start"] = format_timestamp(
            start + timedelta(seconds=gap), draw(st.integers(0, 9)), "T", "+00:00"
        )
    if payload.get("is_first_session") is True:
        payload["session_number"] = 1


HOW = st.sampled_from(["edge", "edge", "any", "drop", "unknown", "session"])
EDGE = st.sampled_from(EDGE_VALUES)
ANY = st.one_of(
    st.integers(),
    st.floats(),
    st.text(max_size=10),
    st.lists(st.text(max_size=3), max_size=3),
    st.booleans(),
    st.none(),
)
UNKNOWN = st.sampled_from(["extra", "Tutor_ID", "\x00", "\ud800", "session_id "])
SESSION_RULES = st.sampled_from([{"no_show": True}, {"is_first_session": True}, {"session_number": 2}])
TIMESTAMP = timestamp_value()
COUNT = st.integers(1, 3)


@cache
def field_names(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from(list(get_registry()[name].loader.load_fields))


@st.composite
def mutated_payload(draw: st.DrawFn, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    out = dict(payload)
    for _ in range(draw(COUNT)):
        how = draw(HOW)
        key = draw(field_names(name))
        if how == "edge":
            out[key] = draw(EDGE)
        elif how == "any":
            out[key] = draw(ANY)
        elif how == "drop":
            out.pop(key, None)
        elif how == "unknown":
            out[draw(UNKNOWN)] = 1
        elif name == "sessions":
            out.update(draw(SESSION_RULES))
            if "actual_start" in out:
                out["actual_start"] = draw(TIMESTAMP)
    return out


# -- the comparison ----------------------------------------------------------------------------


def reference(name: str, payload: Any) -> dict[str, Any] | None:
    try:
        return get_registry()[name].loader.load(payload)
    except ma.ValidationError:
        return None


def compare(name: str, payload: dict[str, Any], *, must_be_fast: bool) -> None:
    fast = get_registry()[name].fast_load(payload)
    slow = reference(name, payload)
    assert slow is not None or not must_be_fast, f"the strategy drew an invalid payload: {payload!r}"
    if fast is None:
        assert not must_be_fast, f"valid payload refused by the fast path: {payload!r}"
        return
    assert slow is not None, f"the fast path accepted what marshmallow refuses: {payload!r}"
    assert repr_typed(fast) == repr_typed(slow), payload
    assert fast == slow
    for loose in LOOSE_CONTRACTS:  # what the fast path accepts, no contract would change
        applied = contracts.apply(loose, get_registry()[name].loader, payload)
        assert (applied.payload, applied.extra, applied.dropped, applied.nulled) == (payload, None, (), ()), payload


LOOSE_CONTRACTS = (
    SchemaContract(unknown="keep", wrong_type="null"),
    SchemaContract(unknown="drop", wrong_type="null"),
)


@pytest.mark.parametrize("name", BUILTIN)
def test_fast_path_matches_marshmallow(name):
    @SETTINGS
    @given(st.data())
    def check(data):
        payload = data.draw(valid_payload(name))
        compare(name, payload, must_be_fast=True)
        for _ in range(MUTATIONS):
            compare(name, data.draw(mutated_payload(name, payload)), must_be_fast=False)

    check()


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"session_number": 5.0}, "an integral float is an integer"),
        ({"engagement_score": Decimal("0.5")}, "a Decimal is not a JSON number"),
        ({"engagement_score": 1}, "an int number is a float"),
        ({"session_id": "s-1\n"}, "the newline is stripped"),
        ({"session_id": "s-\n1"}, "inside an id it is an error"),
        ({"subject": "Math\x01"}, "control characters are kept"),
        ({"scheduled_start": "2026-01-05"}, "a date alone is not a timestamp"),
        ({"scheduled_start": "2026-01-05T10:00:00.1234569Z"}, "fractions are truncated"),
        ({"late_start_minutes": True}, "a bool is not an integer"),
        ({"engagement_score": float("nan")}, "NaN"),
        ({"duration_minutes": 10**30}, "huge"),
        ({"extra": 1}, "unknown field"),
        ({"technical_issues": None}, "null is the default"),
        ({"actual_start": "2026-01-06T10:00Z"}, "exactly 24 h"),
        ({"actual_start": "2026-01-06T10:00:00.000001Z"}, "just over 24 h"),
    ],
)
def test_edge_cases_agree_through_validate(payload, why):
    """RecordType.validate gives marshmallow's verdict and values, fast path or not."""
    sessions = get_registry()["sessions"]
    base = {
        "session_id": "s-1",
        "tutor_id": "t-1",
        "student_id": "st-1",
        "session_number": 3,
        "scheduled_start": "2026-01-05T10:00:00Z",
        "duration_minutes": 60,
        "subject": "Math",
        "session_type": "regular",
    }
    record = {**base, **payload}
    data, errors = sessions.validate(record, datetime(2026, 6, 1, tzinfo=UTC))
    try:
        expected, expected_errors = sessions.loader.load(record), {}
    except ma.ValidationError as exc:
        expected, expected_errors = None, exc.messages
    assert repr_typed(data) == repr_typed(expected), why
    assert sorted(errors) == sorted(expected_errors), why


def test_every_builtin_type_has_a_fast_path_and_a_plugged_type_may_not():
    registry = get_registry()
    assert all(registry[name].fast_load is not None for name in BUILTIN)

    class Custom(ma.Schema):
        code = ma.fields.String(required=True)

    with pytest.raises(TypeError):
        fast_loader(Custom)


BASES = {
    "tutors": {
        "tutor_id": "t-1",
        "name": "Ada",
        "email": "ada@example.com",
        "age": 30,
        "location": "Paris",
        "subjects": ["Math", "math"],
        "onboarding_date": "2026-01-01",
        "baseline_sessions_per_week": 5,
        "status": "active",
        "updated_at": "2026-01-02T03:04:05+02:00",
    },
    "students": {"student_id": "st-1", "name": "Bo", "grade_level": 5, "enrolled_on": "2025-09-01"},
    "sessions": {
        "session_id": "s-1",
        "tutor_id": "t-1",
        "student_id": "st-1",
        "session_number": 1,
        "scheduled_start": "2026-01-05T10:00:00Z",
        "actual_start": "2026-01-05T10:07:30Z",
        "duration_minutes": 60,
        "subject": "Math",
        "session_type": "regular",
        "engagement_score": 0.5,
    },
    "feedback": {
        "feedback_id": "f-1",
        "session_id": "s-1",
        "student_id": "st-1",
        "tutor_id": "t-1",
        "overall_rating": 4,
        "patience_rating": 5,
        "improvement_areas": ["pace"],
        "submitted_at": "2026-01-05T12:00:00Z",
        "is_first_session": True,
    },
}


@pytest.mark.parametrize("name", BUILTIN)
def test_every_field_with_every_edge_value(name):
    """Every field of a valid record set to every edge value, or removed, one at a time."""
    base = BASES[name]
    compare(name, base, must_be_fast=True)
    for key in REGISTRY[name].loader.load_fields:
        compare(name, {k: v for k, v in base.items() if k != key}, must_be_fast=False)
        for value in EDGE_VALUES:
            compare(name, {**base, key: value}, must_be_fast=False)
