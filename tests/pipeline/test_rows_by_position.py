"""Persist reads a chunk's rows by position (arrays, ``e ->> i`` cast to the column's type) rather
than as objects through ``json_populate_recordset``: on the real database, the same values give
the same rows both ways, or fail both ways, for every column of every built-in type (hypothesis:
any value of the column's kind, null, values of another kind, text with escapes and control
characters, numbers at their type's limits, timestamps with and without an offset, arrays with
nulls, any JSON for jsonb). The differences the module's docstring names are tested apart."""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta, timezone
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from etl_app.pipeline import persist
from etl_app.record_types import get_registry

BUILTIN = ("tutors", "students", "sessions", "feedback")
REGISTRY = get_registry()
SETTINGS = settings(
    max_examples=100, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", " x ", "a\\b", 'q"uote', "\x01\x1f", "é😀", "\u2028", "2026-01-02", "true", "12", "null", "{}", "[1]"]
)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), None])


def _of_kind(type_: sa.types.TypeEngine) -> st.SearchStrategy[Any]:
    if isinstance(type_, (postgresql.JSONB, sa.JSON)):
        return JSON_VALUE
    if isinstance(type_, sa.ARRAY):
        return st.lists(st.none() | _of_kind(type_.item_type), max_size=4)
    if isinstance(type_, sa.Boolean):
        return st.booleans()
    if isinstance(type_, sa.BigInteger):
        return st.integers(-(2**63), 2**63 - 1)
    if isinstance(type_, sa.Integer):
        return st.integers(-(2**31), 2**31 - 1)
    if isinstance(type_, sa.Float):
        return st.floats(allow_nan=False, allow_infinity=False).map(abs) | st.sampled_from([5.0, 1e-300, -1.5, 1e308])
    if isinstance(type_, sa.DateTime):
        return st.datetimes(timezones=ZONES)
    if isinstance(type_, sa.Date):
        return st.dates()
    if isinstance(type_, sa.Uuid):
        return st.uuids() | st.just("{6fa459ea-ee8a-3ca4-894e-db77e160355e}")
    return TEXT


# Values of another kind than the column's: refused alike, or coerced alike, which is what is tested.
OTHER = st.sampled_from([5, 5.5, True, "5", "t", "", [1, "a"], {"a": 1}, 2**31, "not-a-uuid", "\x00", [[1]], 0.5])


# A string column takes any scalar as its text alike; a container, or a float in exponent form,
# reads as jsonb writes it (the documented difference, tested apart).
OTHER_FOR_STRINGS = st.sampled_from([5, 5.5, True, False, 2**40, -7, 0.25])


def _values(type_: sa.types.TypeEngine, mixed: bool) -> st.SearchStrategy[Any]:
    """Of the column's kind or null; in a ``mixed`` chunk, one value in eight of another kind."""
    kind = st.one_of(_of_kind(type_), _of_kind(type_), _of_kind(type_), st.none())
    other = OTHER_FOR_STRINGS if persist._scalar(type_) == "text" else OTHER
    return st.integers(0, 7).flatmap(lambda n: other if mixed and n == 0 else kind)


@st.composite
def _chunk(draw, record_type) -> list[dict[str, Any]]:
    columns = persist.row_columns(record_type)[len(persist._FROM_ITEM) :]
    mixed = draw(st.booleans())
    items = []
    for n in range(draw(st.integers(1, 4))):
        data = {c: draw(_values(record_type.table.c[c].type, mixed)) for c in columns if draw(st.integers(0, 9))}
        items.append(
            {
                "id": n + 1,
                "ingestion_id": str(uuid.UUID(int=n)),
                "received_at": draw(st.datetimes(timezones=ZONES)),
                "enriched_at": draw(st.none() | st.datetimes(timezones=ZONES)),
                "data": data,
            }
        )
    return items


def _read(conn: sa.Connection, select: str, document: bytes) -> list[Any] | str:
    """The rows ``select`` reads from ``document`` (in order, as PostgreSQL writes them), or the
    class of the error that refused it."""
    try:
        with conn.begin_nested():
            rows = conn.execute(sa.text(f"SELECT CAST(g AS text) FROM ({select}) AS g"), {"values": document.decode()})
            return [r for (r,) in rows]  # the rows as PostgreSQL writes them: a null is not a JSON null
    except sa.exc.DBAPIError as exc:
        return type(exc.orig).__name__


@pytest.mark.parametrize("type_name", BUILTIN)
def test_rows_read_by_position_are_the_rows_read_as_objects(engine, type_name):
    record_type = REGISTRY[type_name]
    assert persist._by_position(record_type)
    as_objects = persist.objects_rows(record_type)  # what a type not read by position keeps
    seen = {"rows": 0, "refused": 0}

    @SETTINGS
    @given(items=_chunk(record_type))
    def check(items):
        by_objects = _read(conn, as_objects, persist._objects_document(items))
        by_position = _read(conn, persist.given_rows(record_type), persist.rows_document(record_type, items))
        if isinstance(by_objects, str):  # refused: by position too (the error's class may differ)
            assert isinstance(by_position, str), (by_objects, by_position)
            seen["refused"] += 1
        else:
            assert by_position == by_objects
            seen["rows"] += 1

    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SET LOCAL TIME ZONE 'America/New_York'"))  # a naive timestamp reads as local time
        check()
    assert seen["rows"] and seen["refused"]  # both outcomes were compared


def test_a_document_of_objects_stashed_before_arrays_is_read_as_arrays():
    record_type = REGISTRY["students"]
    at = "2026-01-02T03:04:05+00:00"
    item = {"id": 7, "ingestion_id": "i", "received_at": at, "enriched_at": at, "data": {"name": "n", "x": 1}}
    old = persist._objects_document([item])
    (row,) = orjson.loads(persist._rows_from_objects(record_type, old))
    assert row == orjson.loads(persist.rows_document(record_type, [item]))[0]
    assert dict(zip(persist.row_columns(record_type), row, strict=True))["name"] == "n"


def test_a_value_too_long_for_a_varchar_column_is_refused_not_cut():
    """A string column is read as text, so the insert refuses a value too long for ``varchar(n)``
    (as json_populate_recordset's typed input did), where a cast would cut it."""
    assert persist._scalar(sa.String(3)) == "text"
    assert persist._scalar(sa.Enum("a", "b", name="e")) is None  # no assignment cast from text: read as objects
    assert persist._element(0, postgresql.ARRAY(sa.Integer, dimensions=2)) is None


def test_the_documented_differences(engine):
    """Read by position (jsonb), a float ``-0.0`` is stored as ``0``, and a number in exponent
    form or an array sent to a string column reads as jsonb writes it; as objects they kept
    ``-0``, ``1e16`` and ``[1,"a"]``. The numbers compare equal, and a validated record sends a
    string column neither."""
    record_type = REGISTRY["sessions"]
    at = "2026-01-02T03:04:05+00:00"
    item = {"id": 1, "ingestion_id": str(uuid.UUID(int=1)), "received_at": at, "enriched_at": at,
            "data": {"engagement_score": -0.0, "subject": 1e16, "time_of_day": [1, "a"]}}  # fmt: skip
    select = f"SELECT engagement_score, subject, time_of_day FROM ({persist.given_rows(record_type)}) AS g"
    with engine.connect() as conn:
        row = conn.execute(sa.text(select), {"values": persist.rows_document(record_type, [item]).decode()}).one()
    assert (str(row.engagement_score), row.subject, row.time_of_day) == ("0.0", "10000000000000000", '[1, "a"]')
