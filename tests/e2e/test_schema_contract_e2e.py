"""Schema contracts end to end: web and a real `celery worker` started with ETL_SCHEMA_CONTRACT,
which overrides the built-in types' declared contract (unknown fields and wrong-typed values
rejected) for students (unknown fields kept, wrong-typed optional values nulled) and tutors
(unknown fields dropped); sessions keep the declared contract."""

from __future__ import annotations

import pytest

from tests.helpers.payloads import session, student, tutor

pytestmark = pytest.mark.slow

STACK_ENV = {"ETL_SCHEMA_CONTRACT": "students:unknown=keep,wrong_type=null;tutors:unknown=drop"}
NOTHING = {"total": 0, "fields": {}}


def test_kept_unknown_fields_are_stored_beside_the_record_and_shown_with_it(api, sql, unique):
    sid = f"{unique}-keep"
    sent = student(sid, shoe_size=42, clubs={"chess": ["mon", "thu"]})
    body = api.submit("students", sent)  # one record: checked by the web, then again by the worker
    quality = api.wait_settled(body["ingestion_id"])["quality"]
    assert quality["accepted"] == 1 and quality["dropped_fields"] == NOTHING

    record = api.get(f"records/students/{sid}").json()
    assert record["extra"] == {"shoe_size": 42, "clubs": {"chess": ["mon", "thu"]}}
    fields = {"student_id": sid, "name": "Sam Student", "grade_level": 9, "enrolled_on": None, "event_time": None}
    assert record["fields"] == fields
    (row,) = sql("SELECT grade_level, extra FROM students WHERE student_id = :k", k=sid)
    assert row.grade_level == 9 and row.extra == {"shoe_size": 42, "clubs": {"chess": ["mon", "thu"]}}


def test_kept_unknown_fields_beyond_the_bounds_reject_the_record_with_a_clear_error(api, unique):
    r = api.post("students/batch", [student(f"{unique}-big", notes="x" * 9000), student(f"{unique}-fine", a=1)])
    assert r.status_code == 202, r.text
    (refused,) = r.json()["errors"]
    assert refused["index"] == 0
    assert refused["errors"]["_schema"][0].startswith("Unknown fields too large to keep:")


def test_wrong_typed_optional_values_are_stored_as_null_and_counted(api, sql, unique):
    batch = [
        student(f"{unique}-n1", grade_level="ninth"),
        student(f"{unique}-n2", grade_level=True, enrolled_on=20260105),
        student(f"{unique}-n3"),
        student(f"{unique}-n4", grade_level=99),  # the right type, out of range: refused
        {"student_id": 4, "name": "Required"},  # a required field: always refused
    ]
    r = api.post("students/batch", batch)
    assert r.status_code == 202, r.text
    assert [(e["index"], list(e["errors"])) for e in r.json()["errors"]] == [(3, ["grade_level"]), (4, ["student_id"])]
    quality = api.wait_settled(r.json()["ingestion_id"])["quality"]
    assert quality["accepted"] == 3 and quality["rejected"] == 2
    assert quality["nulled_values"] == {"total": 3, "fields": {"grade_level": 2, "enrolled_on": 1}}
    rows = sql(
        "SELECT student_id, grade_level, enrolled_on FROM students WHERE student_id LIKE :p ORDER BY 1",
        p=f"{unique}-n%",
    )
    assert [tuple(row) for row in rows] == [(f"{unique}-n1", None, None), (f"{unique}-n2", None, None),
                                            (f"{unique}-n3", 9, None)]  # fmt: skip


def test_dropped_unknown_fields_are_counted_in_the_ingestion_quality(api, sql, unique):
    batch = [
        tutor(f"{unique}-d1", favourite_colour="blue"),
        tutor(f"{unique}-d2", favourite_colour="red", shoe_size=44),
        tutor(f"{unique}-d3"),
    ]
    body = api.submit("tutors/batch", batch)
    assert body["errors"] == []
    quality = api.wait_settled(body["ingestion_id"])["quality"]
    assert quality["accepted"] == 3
    assert quality["dropped_fields"] == {"total": 3, "fields": {"favourite_colour": 2, "shoe_size": 1}}
    assert quality["nulled_values"] == NOTHING
    record = api.get(f"records/tutors/{unique}-d2").json()
    assert record["extra"] is None and "favourite_colour" not in record["fields"]


def test_a_type_the_setting_does_not_name_keeps_rejecting_as_today(api, unique):
    contracts = {t["name"]: t["contract"] for t in api.get("record-types").json()["record_types"]}
    assert contracts == {
        "tutors": {"unknown": "drop", "wrong_type": "reject"},
        "students": {"unknown": "keep", "wrong_type": "null"},
        "sessions": {"unknown": "reject", "wrong_type": "reject"},
        "feedback": {"unknown": "reject", "wrong_type": "reject"},
    }
    r = api.post("sessions/batch", [session(f"{unique}-s1", "t", "s", mood="good")])
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["errors"] == {"mood": ["Unknown field."]}
    # tutors drop unknown fields, but their wrong_type is still the declared reject
    r = api.post("tutors/batch", [tutor(f"{unique}-t1", age="forty")])
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["errors"] == {"age": ["Not a valid integer."]}


def test_an_uploaded_extra_column_is_kept_for_students_and_dropped_for_tutors(api, sql, unique):
    students_csv = f"student_id,name,Favourite Colour\n{unique}-u1,Uma,blue\n{unique}-u2,Ugo,\n".encode()
    body = api.upload("students", "students.csv", students_csv).json()
    ingestion = api.wait_settled(body["ingestion_id"])
    assert ingestion["counts"]["persisted"] == 2 and ingestion["counts"]["rejected"] == 0
    assert api.get(f"records/students/{unique}-u1").json()["extra"] == {"favourite_colour": "blue"}
    assert api.get(f"records/students/{unique}-u2").json()["extra"] is None  # an empty cell is no field

    tutors_csv = (
        "tutor_id,name,email,subjects,onboarding_date,status,Favourite Colour\n"
        f"{unique}-u3,Ada,ada@example.org,Math,2026-01-01,active,blue\n"
    ).encode()
    body = api.upload("tutors", "tutors.csv", tutors_csv).json()
    ingestion = api.wait_settled(body["ingestion_id"])
    assert ingestion["counts"]["persisted"] == 1
    assert ingestion["quality"]["dropped_fields"] == {"total": 1, "fields": {"favourite_colour": 1}}
    (row,) = sql("SELECT name, extra FROM tutors WHERE tutor_id = :k", k=f"{unique}-u3")
    assert tuple(row) == ("Ada", None)
