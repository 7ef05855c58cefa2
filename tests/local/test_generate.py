"""The synthetic data generator: deterministic, valid, consistent, plausibly distributed."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from click.testing import CliRunner

from etl_app.cli import main
from etl_app.local.generate import REFERENCE, TYPES, dataset, generate, plan, write_records
from etl_app.local.generate_formats import columns
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


# Flat formats: one column per schema field, read back with the standard readers.


def flat_text(value) -> str:
    """A value as the CSV / TSV writer spells it (empty cell = null)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def utc_of(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def run_generate(*args: str):
    result = CliRunner().invoke(main, ["generate", *args])
    return result


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
@pytest.mark.parametrize("record_type", TYPES)
def test_csv_and_tsv_hold_every_field_of_every_record(tmp_path, record_type, fmt):
    target = tmp_path / f"out.{fmt}"
    result = run_generate(record_type, "--count", "300", "--seed", "7", "-o", str(target))
    assert result.exit_code == 0, result.output
    with open(target, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="," if fmt == "csv" else "\t")
        rows = list(reader)
    assert reader.fieldnames == [name for name, _ in columns(record_type)]
    assert "source" not in reader.fieldnames and "event_time" not in reader.fieldnames
    expected = [{name: flat_text(r.get(name)) for name in reader.fieldnames} for r in generate(record_type, 300, 7)]
    assert rows == expected


def test_csv_values_of_a_seeded_run(tmp_path):
    target = tmp_path / "tutors.csv"
    assert run_generate("tutors", "--count", "3", "-o", str(target)).exit_code == 0
    with open(target, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    assert rows[0]["subjects"] == "Physics;Statistics;Algebra;STATISTICS"
    assert rows[0]["location"] == "Denver, CO"  # quoted, comma kept
    assert rows[1]["location"] == "" and rows[1]["education_level"] == ""  # missing: an empty cell
    assert rows[2]["updated_at"] == "" and rows[0]["updated_at"] == "2025-08-07T04:49:35Z"

    target = tmp_path / "sessions.csv"
    assert run_generate("sessions", "--count", "2", "-o", str(target)).exit_code == 0
    first = next(csv.DictReader(target.open(newline="")))
    assert first["scheduled_start"] == "2026-08-21T18:30:00+01:00"  # the offset kept in text
    assert first["is_first_session"] == "true" and first["no_show"] == ""


def test_xlsx_has_typed_cells(tmp_path):
    from openpyxl import load_workbook

    target = tmp_path / "sessions.xlsx"
    result = run_generate("sessions", "--count", "500", "--seed", "3", "-o", str(target))
    assert result.exit_code == 0, result.output
    sheet = load_workbook(target, read_only=True)["sessions"]
    header, *rows = list(sheet.iter_rows(values_only=True))
    assert list(header) == [name for name, _ in columns("sessions")]
    assert len(rows) == 500
    for row, record in zip(rows, generate("sessions", 500, 3), strict=True):
        cells = dict(zip(header, row + (None,) * (len(header) - len(row)), strict=True))  # trailing blanks trimmed
        for name, value in record.items():
            if name in ("scheduled_start", "actual_start"):
                assert cells[name] == utc_of(value).replace(tzinfo=None)  # the instant, in UTC
            else:
                assert cells[name] == value and type(cells[name]) is type(value), name
        assert all(cells[name] is None for name in set(header) - record.keys())

    target = tmp_path / "tutors.xlsx"
    assert run_generate("tutors", "--count", "1", "-o", str(target)).exit_code == 0
    tutor_row = next(load_workbook(target, read_only=True).active.iter_rows(min_row=2, values_only=True))
    assert tutor_row[6] == "Physics;Statistics;Algebra;STATISTICS"
    assert tutor_row[9] == datetime(2024, 6, 8)  # onboarding_date: a date cell


def test_parquet_has_typed_columns_in_row_groups(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr("etl_app.local.generate_formats.ROW_GROUP", 100)
    count = 210
    target = tmp_path / "feedback.parquet"
    result = run_generate("feedback", "--count", str(count), "--seed", "2", "-o", str(target))
    assert result.exit_code == 0, result.output
    parquet = pq.ParquetFile(target)
    assert parquet.metadata.num_rows == count and parquet.num_row_groups == 3
    schema = parquet.schema_arrow
    assert schema.field("overall_rating").type == pa.int64()
    assert schema.field("would_recommend").type == pa.bool_()
    assert schema.field("submitted_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("improvement_areas").type == pa.string()
    rows = parquet.read().to_pylist()
    for row, record in zip(rows, generate("feedback", count, 2), strict=True):
        for name, value in row.items():
            given = record.get(name)
            if name == "submitted_at":
                assert value == utc_of(given)
            elif name == "improvement_areas":
                assert value == (";".join(given) if given else None)
            elif name == "free_text_feedback" and given == "":
                assert value is None
            else:
                assert value == given, name


def test_format_comes_from_the_extension_unless_given(tmp_path):
    assert run_generate("students", "--count", "2", "-o", str(tmp_path / "s.csv")).exit_code == 0
    assert (tmp_path / "s.csv").read_text().startswith("student_id,name,grade_level,enrolled_on\n")
    assert run_generate("students", "--count", "2", "-o", str(tmp_path / "s.txt")).exit_code == 0
    assert [orjson.loads(line) for line in (tmp_path / "s.txt").read_bytes().splitlines()] == list(
        generate("students", 2, 0)
    )
    result = run_generate("students", "--count", "2", "--format", "tsv", "-o", str(tmp_path / "s.csv"))
    assert result.exit_code == 0 and (tmp_path / "s.csv").read_text().startswith("student_id\tname\t")
    result = run_generate("students", "--count", "2", "--format", "csv")
    assert result.exit_code == 0 and result.stdout.splitlines()[0] == "student_id,name,grade_level,enrolled_on"
    result = run_generate("students", "--count", "2", "--format", "parquet")
    assert result.exit_code == 2 and "give an output file" in result.stderr


def test_xlsx_refuses_more_rows_than_excel_holds(tmp_path, monkeypatch):
    target = tmp_path / "big.xlsx"
    result = run_generate("sessions", "--count", "1048576", "-o", str(target))
    assert result.exit_code == 2
    assert "xlsx holds at most 1,048,575 rows" in result.stderr and "use csv or parquet" in result.stderr
    assert not target.exists()

    # feedback for N sessions: how many is known only while writing; the partial file is removed
    monkeypatch.setattr("etl_app.local.generate_formats.XLSX_MAX_ROWS", 5)
    result = run_generate("feedback", "--for-sessions", "20", "-o", str(target))
    assert result.exit_code == 2 and "at most 5 rows" in result.stderr
    assert not target.exists()


def test_a_big_csv_is_streamed_not_built_in_memory():
    import tracemalloc

    template = next(generate("sessions", 1, 0))
    made = 0

    def records():  # cheap records, so that the writer's own memory is what is measured
        nonlocal made
        for i in range(100_000):
            made += 1
            yield {**template, "session_id": f"ses-{i:07d}"}

    class Sink(io.RawIOBase):
        written = 0
        made_at_first_write: int | None = None

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            if self.made_at_first_write is None:
                self.made_at_first_write = made
            self.written += len(data)
            return len(data)

    sink = Sink()
    tracemalloc.start()
    try:
        n = write_records(records(), io.BufferedWriter(sink), "csv", "sessions")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 100_000 and sink.written > 100_000 * 100
    assert sink.made_at_first_write < 1000  # rows reach the file as they are made
    assert peak < 4 * 1024 * 1024, f"peak {peak:,} bytes: the rows were held in memory"
