"""The synthetic data generator: deterministic, valid, consistent, plausibly distributed."""

from __future__ import annotations

import io
from collections import Counter
from datetime import datetime

import orjson
import pytest
from click.testing import CliRunner

from etl_app.cli import main
from etl_app.local.generate import REFERENCE, TYPES, dataset, generate, plan, write_records
from etl_app.record_types import get_registry


def as_bytes(record_type: str, count: int, seed: int, **kw) -> bytes:
    out = io.BytesIO()
    write_records(generate(record_type, count, seed, **kw), out)
    return out.getvalue()


@pytest.mark.parametrize("record_type", TYPES)
def test_same_seed_gives_identical_bytes_and_another_seed_does_not(record_type):
    first = as_bytes(record_type, 500, seed=11)
    assert first == as_bytes(record_type, 500, seed=11)
    assert first != as_bytes(record_type, 500, seed=12)
    assert len(first.splitlines()) == 500


@pytest.mark.parametrize("record_type", TYPES)
def test_every_record_passes_its_record_type_validation(record_type):
    rt = get_registry()[record_type]
    for record in generate(record_type, 3000, seed=5):
        data, errors = rt.validate(record, REFERENCE)
        assert errors == {}, (record, errors)
        assert data is not None


def test_streams_are_prefix_stable():
    assert list(generate("sessions", 100, 3)) == list(generate("sessions", 300, 3))[:100]


def test_a_dataset_only_refers_to_parents_it_contains():
    ds = dataset(4000, seed=9, id_prefix="b1-")
    tutors = {t["tutor_id"] for t in ds.stream("tutors")}
    students = {s["student_id"] for s in ds.stream("students")}
    assert (len(tutors), len(students)) == (plan(4000)["tutors"], plan(4000)["students"])
    sessions = {s["session_id"]: s for s in ds.stream("sessions")}
    assert len(sessions) == 4000
    assert all(s["tutor_id"] in tutors and s["student_id"] in students for s in sessions.values())
    feedback = list(ds.stream("feedback"))
    assert 0.62 < len(feedback) / len(sessions) < 0.78
    for f in feedback:
        session = sessions[f["session_id"]]
        assert (f["tutor_id"], f["student_id"]) == (session["tutor_id"], session["student_id"])
    assert all(x.startswith("b1-") for x in [*tutors, *students, *sessions])


def test_distributions_are_plausible():
    sessions = list(generate("sessions", 20000, seed=2))
    no_show = sum(1 for s in sessions if s.get("no_show")) / len(sessions)
    assert 0.05 <= no_show <= 0.10
    assert not any("actual_start" in s for s in sessions if s.get("no_show"))
    suffixes = Counter(s["scheduled_start"][19:] for s in sessions)
    assert {"", "Z", "-05:00", "+05:30"} <= set(suffixes)
    assert len({datetime.fromisoformat(s["scheduled_start"]).hour for s in sessions}) == 24
    durations = Counter(s["duration_minutes"] for s in sessions)
    assert sum(durations[d] for d in (30, 45, 60, 90)) / len(sessions) > 0.85
    late = [
        (datetime.fromisoformat(s["actual_start"]) - datetime.fromisoformat(s["scheduled_start"])).total_seconds()
        for s in sessions
        if "actual_start" in s
    ]
    assert sum(1 for x in late if 0 <= x <= 300) > sum(1 for x in late if x > 300) > 0.1 * len(late)

    tutors = list(generate("tutors", 5000, seed=2))
    assert Counter(t["status"] for t in tutors).most_common(1)[0][0] == "active"
    assert all(18 <= t["age"] <= 70 and 1 <= len(t["subjects"]) <= 5 for t in tutors)
    assert any(len({s.casefold() for s in t["subjects"]}) < len(t["subjects"]) for t in tutors)
    onboarding = sorted(t["onboarding_date"] for t in tutors)
    assert onboarding[0] < "2024-01-01" and onboarding[-1] <= REFERENCE.date().isoformat()

    assert all(1 <= s.get("grade_level", 1) <= 16 for s in generate("students", 5000, seed=2))

    ratings = Counter(f["overall_rating"] for f in generate("feedback", 5000, seed=2))
    assert ratings[4] + ratings[5] > 0.6 * 5000 and ratings[1] > 0


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError):
        generate("lessons", 1, 1)
    with pytest.raises(ValueError):
        generate("tutors", 1, 1, id_prefix="no spaces")


def test_cli_writes_ndjson_by_default_and_json_on_request(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["generate", "students", "--count", "5", "--seed", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout_bytes.splitlines()
    assert [orjson.loads(line) for line in lines] == list(generate("students", 5, 3))

    target = tmp_path / "t.json"
    result = runner.invoke(main, ["generate", "tutors", "--count", "3", "--format", "json", "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert orjson.loads(target.read_bytes()) == list(generate("tutors", 3, 0))

    result = runner.invoke(main, ["generate", "tutors", "--for-sessions", "81", "--id-prefix", "p-"])
    assert [orjson.loads(line)["tutor_id"] for line in result.stdout_bytes.splitlines()] == [
        "p-tut-000001",
        "p-tut-000002",
        "p-tut-000003",
    ]
