"""Completeness over a type's *expected* fields (docs/quality.md): ``overall`` averages only the
optional fields its data owners want filled, the score leaves a null ``overall`` out, and the
fields are listed in the schema's order."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from etl_app.quality import settle
from etl_app.record_types import Expected, Registry, get_registry

from tests.helpers.dead_letters import store
from tests.helpers.payloads import session, tutor

RECEIVED_AT = datetime(2002, 3, 4, 10, 0, tzinfo=UTC)


def settled_quality(engine, record_type: str, payloads: list[dict], registry: Registry | None = None) -> dict:
    """Store ``payloads`` as one ingestion, persist them all, settle it; its stored quality."""
    accepted = store(engine, record_type, payloads, received_at=RECEIVED_AT)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE raw_records SET status = 'persisted' WHERE id = ANY(:ids)"), {"ids": accepted.ids})
    assert settle.settle(engine, [accepted.ingestion_id], registry=registry) == [accepted.ingestion_id]
    with engine.connect() as conn:
        return conn.scalar(sa.text("SELECT quality FROM ingestions WHERE id = :i"), {"i": accepted.ingestion_id})


def test_a_tutor_with_its_expected_fields_and_no_other_optional_one_is_excellent(engine, unique):
    filled = tutor(unique, location="Lisbon", education_level="masters", subject_type="stem")
    quality = settled_quality(engine, "tutors", [filled])
    assert quality["completeness"]["age"] == 0.0  # listed, but lowers nothing
    assert quality["completeness"]["behavioral_archetype"] == 0.0
    assert quality["completeness"]["overall"] == 1.0
    assert (quality["score"], quality["level"]) == (1.0, "excellent")


def test_overall_is_the_mean_of_the_expected_fields_only(engine, unique):
    tutors = [
        tutor(f"{unique}-1", location="Lisbon", education_level="masters", age=40),
        tutor(f"{unique}-2", location="Porto"),
    ]
    quality = settled_quality(engine, "tutors", tutors)
    shares = quality["completeness"]
    assert (shares["location"], shares["education_level"], shares["subject_type"]) == (1.0, 0.5, 0.0)
    assert shares["overall"] == 0.5  # (1 + 0.5 + 0) / 3; age (0.5) and the required fields not in it
    assert quality["score"] == 0.875  # (1 + 0.5 + 1 + 1) / 4
    assert quality["level"] == "good"


def test_a_no_shows_missing_actual_start_counts_as_given(engine, unique):
    t, s = f"{unique}-t", f"{unique}-st"
    came = session(f"{unique}-1", t, s, engagement_score=0.8, learning_objectives_met=True)
    absent = session(f"{unique}-2", t, s, no_show=True, engagement_score=0.0, learning_objectives_met=False)
    del absent["actual_start"]
    quality = settled_quality(engine, "sessions", [came, absent])
    assert quality["completeness"]["actual_start"] == 1.0
    assert quality["completeness"]["overall"] == 1.0
    assert quality["completeness"]["late_start_minutes"] == 0.0  # optional, not expected
    forgot = session(f"{unique}-3", t, s, engagement_score=0.5, learning_objectives_met=True)
    del forgot["actual_start"]
    quality = settled_quality(engine, "sessions", [came, forgot])
    assert quality["completeness"]["actual_start"] == 0.5
    assert quality["completeness"]["overall"] == 0.8333  # (0.5 + 1 + 1) / 3


def test_a_type_without_expected_fields_has_no_overall_and_a_score_over_the_others(engine, unique):
    registry = Registry()
    for record_type in get_registry():
        plain = record_type.name == "students"
        registry.register(dataclasses.replace(record_type, expected=()) if plain else record_type)
    payloads = [{"student_id": f"{unique}-1"}, {"student_id": f"{unique}-1", "name": "Ann"}]
    quality = settled_quality(engine, "students", payloads, registry=registry)
    assert quality["completeness"]["overall"] is None
    assert quality["completeness"]["name"] == 0.5
    assert quality["score"] == 0.8333  # (validity 1 + uniqueness 0.5 + integrity 1) / 3
    assert quality["level"] == "fair"


def test_completeness_comes_in_the_schemas_field_order(client, auth, engine, unique):
    accepted = store(engine, "tutors", [tutor(unique, location="Lisbon")], received_at=RECEIVED_AT)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE raw_records SET status = 'persisted' WHERE id = ANY(:ids)"), {"ids": accepted.ids})
    settle.settle(engine, [accepted.ingestion_id])
    body = client.get(f"/api/v1/ingestions/{accepted.ingestion_id}", headers=auth).get_json()
    order = [name for name in get_registry()["tutors"].loader.fields if name not in ("source", "event_time")]
    assert list(body["quality"]["completeness"]) == [*order, "overall"]
    assert order[:4] == ["tutor_id", "name", "email", "age"]


def test_the_record_types_say_which_fields_are_expected(client, auth):
    types = {t["name"]: t for t in client.get("/api/v1/record-types", headers=auth).get_json()["record_types"]}
    expected = {name: [f["name"] for f in t["fields"] if f["expected"]] for name, t in types.items()}
    assert expected == {
        "tutors": ["location", "education_level", "subject_type"],
        "students": ["grade_level", "enrolled_on"],
        "sessions": ["actual_start", "engagement_score", "learning_objectives_met"],
        "feedback": ["free_text_feedback", "would_recommend"],
    }


@pytest.mark.parametrize(
    ("expected", "error"),
    [
        (("name",), "'name' is required"),
        (("nickname",), "'nickname' is not an input field"),
        (("source",), "'source' is not an input field"),
        (("location", "location"), "'location' is expected twice"),
        ((Expected("location", waived_when=("moved", True)),), "waived by 'moved'"),
    ],
)
def test_a_type_that_expects_what_it_cannot_is_refused_at_registration(expected, error):
    bad = dataclasses.replace(get_registry()["tutors"], expected=expected)
    with pytest.raises(ValueError, match=error):
        Registry().register(bad)
