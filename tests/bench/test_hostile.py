"""The hostile-files phase's files, written tiny: each is the file it claims to be.

No service is started here; `python -m bench --only hostile` sends the full-size files.
"""

from __future__ import annotations

import csv
import json
import sys
import zipfile
from pathlib import Path

import openpyxl
import pyarrow.parquet as pq

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # bench/ is a folder of the repository, not an installed package
    sys.path.insert(0, ROOT)

from bench import cli, hostile  # noqa: E402
from bench import hostile_files as files  # noqa: E402


def _rows(path: Path) -> list[tuple]:
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        return list(wb.worksheets[0].iter_rows(values_only=True))
    finally:
        wb.close()


def _encodings(path: Path, column: str) -> set[str]:
    meta = pq.ParquetFile(path).metadata
    index = meta.schema.names.index(column)
    return {e for g in range(meta.num_row_groups) for e in meta.row_group(g).column(index).encodings}


def test_parquet_shared_value_is_one_dictionary_entry_for_every_row(tmp_path):
    path = tmp_path / "students.parquet"
    files.parquet_shared_value(path, rows=500, value_bytes=20_000)
    assert pq.ParquetFile(path).metadata.num_rows == 500
    assert "RLE_DICTIONARY" in _encodings(path, "payload")
    payload = pq.read_table(path, read_dictionary=["payload"]).column("payload").combine_chunks()
    assert len(payload.dictionary) == 1 and len(payload.dictionary[0].as_py()) == 20_000
    assert path.stat().st_size < 20_000  # the value is stored once, compressed: not 500 times


def test_parquet_many_rows_is_constant_run_length_encoded_columns(tmp_path):
    path = tmp_path / "students.parquet"
    files.parquet_many_rows(path, rows=200_000)
    assert pq.ParquetFile(path).metadata.num_rows == 200_000
    assert {"RLE_DICTIONARY"} <= _encodings(path, "student_id") & _encodings(path, "grade_level")
    assert path.stat().st_size < 20_000
    assert pq.read_table(path).slice(199_999).to_pylist() == [
        {"student_id": "S-rle-1", "name": "Ada Lovelace", "grade_level": 9}
    ]


def test_xlsx_shared_value_points_every_cell_at_one_shared_string(tmp_path):
    path = tmp_path / "students.xlsx"
    files.xlsx_shared_string(path, rows=40, value_bytes=30_000)
    with zipfile.ZipFile(path) as archive:
        shared = archive.read("xl/sharedStrings.xml").decode()
        assert all(info.file_size < 2**20 for info in archive.infolist())
    assert shared.count("<si>") == 5 and "A" * 30_000 in shared
    rows = _rows(path)
    assert rows[0] == ("student_id", "name", "payload") and len(rows) == 41
    assert all(row == ("S-shared-1", "A" * 30_000, "A" * 30_000) for row in rows[1:])
    assert path.stat().st_size < 5_000


def test_xlsx_many_strings_holds_them_all_for_a_few_rows(tmp_path):
    path = tmp_path / "students.xlsx"
    files.xlsx_many_strings(path, strings=5_000, rows=3)
    with zipfile.ZipFile(path) as archive:
        assert archive.read("xl/sharedStrings.xml").decode().count("<si>") == 5_000
    assert _rows(path) == [("student_id", "name"), ("0000000", "0000003"), ("0000001", "0000004"),
                           ("0000002", "0000005")]  # fmt: skip


def test_the_other_files_parse_as_their_format(tmp_path):
    files.json_huge_string(tmp_path / "a.json", value_bytes=3 * 2**20 + 5)
    [record] = json.loads((tmp_path / "a.json").read_bytes())
    assert record["student_id"] == "S-json-1" and len(record["payload"]) == 3 * 2**20 + 5

    files.csv_repeated_value(tmp_path / "a.csv", rows=3, value_bytes=1_000)
    with (tmp_path / "a.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(len(r["payload"]) == 1_000 for r in rows)

    files.ndjson_repeated_value(tmp_path / "a.ndjson", rows=3, value_bytes=1_000)
    lines = [json.loads(line) for line in (tmp_path / "a.ndjson").read_text().splitlines()]
    assert [r["student_id"] for r in lines] == ["S-rep-1", "S-rep-2", "S-rep-3"]

    files.xlsx_students(tmp_path / "s.xlsx", rows=25)
    rows = _rows(tmp_path / "s.xlsx")
    assert len(rows) == 26 and "student_id" in rows[0]


def test_the_files_are_the_same_every_run(tmp_path):
    for n in (1, 2):
        files.xlsx_shared_string(tmp_path / f"{n}.xlsx", rows=10, value_bytes=100)
        files.parquet_shared_value(tmp_path / f"{n}.parquet", rows=10, value_bytes=100)
    assert (tmp_path / "1.xlsx").read_bytes() == (tmp_path / "2.xlsx").read_bytes()
    assert (tmp_path / "1.parquet").read_bytes() == (tmp_path / "2.parquet").read_bytes()


def test_the_hostile_phase_runs_only_when_asked():
    assert "hostile" not in cli.parse_args([]).phases
    args = cli.parse_args(["--only", "hostile", "--hostile-cases", "csv-repeated-value"])
    assert args.phases == ["hostile"] and args.hostile_cases == ["csv-repeated-value"]


def test_read_rates_compare_the_first_and_last_quarter_of_the_rows():
    progress = [(0.0, 0), (10.0, 100), (20.0, 200), (60.0, 300), (100.0, 400), (110.0, 400)]
    assert hostile._rates(progress) == {
        "first_quarter_rows_per_s": 10.0,
        "last_quarter_rows_per_s": 2.5,
        "read_seconds": 100.0,
    }
