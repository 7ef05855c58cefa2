"""Schema contracts (etl_app.record_types.contract): what a record type does with unknown fields
(reject, keep, drop) and with wrong-typed optional values (reject, null), and the setting that
overrides the declared contracts."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import marshmallow as ma
import pytest
import sqlalchemy as sa

from etl_app.config import Settings
from etl_app.record_types import RecordType, Registry, SchemaContract, get_registry
from etl_app.record_types.contract import parse_overrides
from schemas.common import Id, RecordSchema

from tests.helpers.payloads import session

pytestmark = pytest.mark.unit

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
SESSION = {**session("s-1", "t-1", "st-1", session_number=3, actual_start=None), "engagement_score": 0.5}


def sessions(**modes) -> RecordType:
    return dataclasses.replace(get_registry()["sessions"], contract=SchemaContract(**modes))


def test_reject_refuses_an_unknown_field_by_name_as_today():
    data, errors = sessions().validate({**SESSION, "mood": "happy"}, AS_OF)
    assert data is None
    assert errors == {"mood": ["Unknown field."]}


def test_keep_stores_unknown_fields_beside_the_typed_values():
    data, errors = sessions(unknown="keep").validate({**SESSION, "mood": "happy", "tags": {"a": [1, 2]}}, AS_OF)
    assert errors == {}
    assert data["extra"] == {"mood": "happy", "tags": {"a": [1, 2]}}
    assert data["subject"] == "Math" and "mood" not in data


def test_keep_without_unknown_fields_keeps_nothing():
    data, errors = sessions(unknown="keep").validate({**SESSION, "session_number": 3.0}, AS_OF)  # slow path
    assert errors == {} and data["extra"] is None


def test_keep_still_reports_the_known_fields_errors():
    data, errors = sessions(unknown="keep").validate({**SESSION, "mood": "x", "duration_minutes": 1}, AS_OF)
    assert data is None and list(errors) == ["duration_minutes"]


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({f"k{i}": i for i in range(101)}, "_schema", "Too many unknown fields to keep: 101, at most 100"),
        ({"blob": "x" * 9000}, "_schema", "Unknown fields too large to keep"),
        ({"note": "a\x00b"}, "note", "Unknown field cannot be kept: it holds NUL."),
        ({"note": {"deep": ["\ud800"]}}, "note", "Unknown field cannot be kept: it holds a lone surrogate."),
        ({"n": float("inf")}, "n", "Unknown field cannot be kept: a number that is not finite."),
    ],
)
def test_keep_refuses_unknown_fields_beyond_its_bounds_with_a_clear_message(extra, field, message):
    data, errors = sessions(unknown="keep").validate({**SESSION, **extra}, AS_OF)
    assert data is None
    assert message in errors[field][0]


def test_drop_removes_unknown_fields_and_stores_none():
    data, errors = sessions(unknown="drop").validate({**SESSION, "mood": "happy"}, AS_OF)
    assert errors == {}
    assert "mood" not in data and "extra" not in data


@pytest.mark.parametrize(
    ("field", "value", "loaded"),
    [
        ("engagement_score", "high", None),
        ("engagement_score", True, None),
        ("learning_objectives_met", "yes", None),
        ("no_show", 1, False),  # null on an optional field is its default
        ("actual_start", 1736071200, None),
        ("late_start_minutes", {"minutes": 3}, None),
        ("source", ["crm"], None),
    ],
)
def test_null_takes_a_wrong_typed_optional_value_as_null(field, value, loaded):
    data, errors = sessions(wrong_type="null").validate({**SESSION, field: value}, AS_OF)
    assert errors == {}
    assert data[field] == loaded


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("session_number", "3"),  # required: always refused
        ("subject", 42),  # required
        ("engagement_score", 5.0),  # right type, out of range: a rule, not a type
        ("actual_start", "yesterday"),  # a string, not a timestamp: a format rule
        ("late_start_minutes", 2.5),  # a number, not an integer: a rule
    ],
)
def test_null_still_refuses_required_fields_and_broken_rules(field, value):
    data, errors = sessions(wrong_type="null").validate({**SESSION, field: value}, AS_OF)
    assert data is None and field in errors


def test_reject_refuses_a_wrong_typed_optional_value_as_today():
    data, errors = sessions().validate({**SESSION, "engagement_score": "high"}, AS_OF)
    assert data is None and errors == {"engagement_score": ["Not a valid number."]}


def test_the_modes_combine():
    payload = {**SESSION, "mood": "ok", "engagement_score": "high"}
    data, errors = sessions(unknown="keep", wrong_type="null").validate(payload, AS_OF)
    assert errors == {} and data["extra"] == {"mood": "ok"} and data["engagement_score"] is None


# -- the setting ----------------------------------------------------------------------------------


def test_the_setting_reads_types_rules_and_modes():
    assert parse_overrides(" sessions : unknown=keep , wrong_type=null ; tutors:unknown=drop;") == {
        "sessions": {"unknown": "keep", "wrong_type": "null"},
        "tutors": {"unknown": "drop"},
    }
    assert parse_overrides("") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sessions", "is not type:rule=mode"),
        ("sessions:unknown=evolve", "unknown of 'sessions' must be one of reject, keep, drop, not 'evolve'"),
        ("sessions:wrong_type=drop", "wrong_type of 'sessions' must be one of reject, null"),
        ("sessions:columns=keep", "the rules are unknown=… and wrong_type=…"),
        ("sessions:unknown=keep;sessions:unknown=drop", "'sessions' is named twice"),
    ],
)
def test_a_malformed_setting_stops_the_start_with_a_clear_error(text, message):
    with pytest.raises(ValueError, match="ETL_SCHEMA_CONTRACT") as caught:
        Settings.from_env({"ETL_SCHEMA_CONTRACT": text})
    assert message in str(caught.value)


def _registry_with_plain_type() -> Registry:
    class PlainSchema(RecordSchema):
        plain_id = Id(required=True)

    registry = Registry()
    registry.register(get_registry()["sessions"])
    registry.register(plain_type(PlainSchema))
    return registry


def test_the_setting_overrides_declared_contracts_and_is_recomputed_at_each_start():
    registry = _registry_with_plain_type()
    registry.apply_contracts("sessions:unknown=keep;plain:wrong_type=null", max_extra_bytes=2048)
    assert registry["sessions"].contract == SchemaContract(unknown="keep", max_extra_bytes=2048)
    assert registry["plain"].contract.wrong_type == "null"
    registry.apply_contracts("")
    assert registry["sessions"].contract == SchemaContract()
    assert registry["sessions"] is get_registry()["sessions"] or registry["sessions"].contract.strict


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lessons:unknown=drop", "no record type 'lessons'"),
        ("plain:unknown=keep", "ETL_SCHEMA_CONTRACT: plain: unknown=keep needs a jsonb column 'extra'"),
    ],
)
def test_the_setting_names_a_type_that_cannot_take_it(text, message):
    registry = _registry_with_plain_type()
    with pytest.raises(ValueError) as caught:
        registry.apply_contracts(text)
    assert message in str(caught.value)


def plain_type(schema: type[ma.Schema], **modes: str) -> RecordType:
    """A type of plain marshmallow fields, on a table with no ``extra`` column."""
    table = sa.Table("plain", sa.MetaData(), sa.Column("plain_id", sa.Text, primary_key=True))
    contract = SchemaContract(**modes)
    return RecordType(name="plain", key="plain_id", schema=schema, derive=lambda *a: {}, table=table, contract=contract)


def test_a_type_declaring_keep_without_an_extra_column_is_refused_at_registration():
    class PlainSchema(ma.Schema):
        plain_id = ma.fields.String(required=True)

    with pytest.raises(ValueError, match="needs a jsonb column 'extra'"):
        Registry().register(plain_type(PlainSchema, unknown="keep"))


def test_plain_marshmallow_fields_are_nulled_by_their_json_type():
    class PlainSchema(ma.Schema):
        plain_id = ma.fields.String(required=True)
        size = ma.fields.Integer()
        tags = ma.fields.List(ma.fields.String())

    data, errors = plain_type(PlainSchema, wrong_type="null").validate(
        {"plain_id": "p", "size": "big", "tags": "a"}, AS_OF
    )
    assert errors == {} and data == {"plain_id": "p"}  # absent: the table's columns take null
