"""Upload file formats: detection, preflight, streaming rows with checkpoints, hostile files,
and the payloads of flat formats validated by the real record types. Files are built here."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
from datetime import UTC, date, datetime, time

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl_app.record_types import get_registry
from etl_app.uploads.flat import coerce, normalise
from etl_app.uploads.formats import FORMATS, FileRefused, Limits, Row, detect, preflight, read_rows, sniff_delimiter

AS_OF = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
LIMITS = Limits()


# ----------------------------------------------------------------------------- helpers


def rows_of(data: bytes, fmt: str, limits: Limits = LIMITS, checkpoint: dict | None = None) -> list[tuple[Row, dict]]:
    return list(read_rows(io.BytesIO(data), fmt, checkpoint=checkpoint, limits=limits, size=len(data)))


def plain(rows: list[tuple[Row, dict]]) -> list[tuple]:
    return [(r.number, r.values, r.errors, r.raw) for r, _ in rows]


def assert_resumes(data: bytes, fmt: str, limits: Limits = LIMITS) -> list[tuple[Row, dict]]:
    """Every checkpoint of a full read, resumed on a fresh file object, gives exactly the rest."""
    full = rows_of(data, fmt, limits)
    assert full, "the file should have rows"
    for k, (_, cp) in enumerate(full):
        assert json.loads(json.dumps(cp)) == cp
        assert 0.0 <= cp["progress"] <= 1.0
        rest = rows_of(data, fmt, limits, checkpoint=cp)
        assert plain(full[: k + 1]) + plain(rest) == plain(full), f"resume after row {k + 1}"
    assert full[-1][1]["progress"] == pytest.approx(1.0, abs=0.05)
    return full


def refused(exc_info) -> tuple[int, str]:
    return exc_info.value.status, exc_info.value.code


def xlsx_bytes(rows: list[list]) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    for row in rows:
        ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


def check(data: bytes, filename: str | None = None, content_type: str | None = None):
    fmt, note = detect(data[:65536], filename, content_type)
    return fmt, note, preflight(io.BytesIO(data), fmt, LIMITS)


def record_type(name: str):
    return get_registry()[name]


# ----------------------------------------------------------------------------- csv / tsv

CSV_BOM_QUOTED = (
    '\ufefftutor_id,name,notes\r\nt1,"Ada, Countess","line one\nline two"\r\nt2,"Say ""hi""",plain\r\n\r\nt3,Bo,\r\n'
).encode()


def test_csv_with_bom_quoted_newline_and_blank_line():
    fmt, note, header = check(CSV_BOM_QUOTED, "tutors.csv", "text/csv")
    assert (fmt, note, header) == ("csv", None, ["tutor_id", "name", "notes"])
    rows = rows_of(CSV_BOM_QUOTED, "csv")
    assert [(r.number, r.values, r.errors) for r, _ in rows] == [
        (2, {"tutor_id": "t1", "name": "Ada, Countess", "notes": "line one\nline two"}, None),
        (3, {"tutor_id": "t2", "name": 'Say "hi"', "notes": "plain"}, None),
        # the blank line is row 4 and is skipped
        (5, {"tutor_id": "t3", "name": "Bo", "notes": ""}, None),
    ]
    assert rows[0][0].raw == {"tutor_id": "t1", "name": "Ada, Countess", "notes": "line one\nline two"}
    assert_resumes(CSV_BOM_QUOTED, "csv")


@pytest.mark.parametrize(("delim", "expected"), [(";", "csv"), ("\t", "tsv"), ("|", "csv")])
def test_delimiter_sniffed(delim, expected):
    data = delim.join(["tutor_id", "name", "age"]).encode() + b"\n"
    data += delim.join(["t1", "Ada, Lovelace", "36"]).encode() + b"\n"
    data += delim.join(["t2", "Bo", "41"]).encode() + b"\n"
    fmt, note, header = check(data, "people.csv")
    assert (fmt, note) == (expected, None)
    assert header == ["tutor_id", "name", "age"]
    rows = rows_of(data, fmt)
    assert [r.values for r, _ in rows] == [
        {"tutor_id": "t1", "name": "Ada, Lovelace", "age": "36"},
        {"tutor_id": "t2", "name": "Bo", "age": "41"},
    ]
    assert_resumes(data, fmt)


def test_tsv_by_name_keeps_commas_in_cells():
    data = b"student_id\tname\ns1\tLee, Ann\ns2\tKim\n"
    fmt, note, header = check(data, "students.tsv")
    assert (fmt, note, header) == ("tsv", None, ["student_id", "name"])
    assert [r.values for r, _ in rows_of(data, "tsv")] == [
        {"student_id": "s1", "name": "Lee, Ann"},
        {"student_id": "s2", "name": "Kim"},
    ]
    assert_resumes(data, "tsv")


def test_csv_header_only_has_no_rows_and_single_column_file_reads():
    assert check(b"tutor_id,name\n")[2] == ["tutor_id", "name"]
    assert rows_of(b"tutor_id,name\n", "csv") == []
    data = b"student_id\ns1\ns2"
    assert check(data)[:2] == ("csv", None)
    assert [(r.number, r.values) for r, _ in rows_of(data, "csv")] == [
        (2, {"student_id": "s1"}),
        (3, {"student_id": "s2"}),
    ]


def test_csv_ragged_rows_are_row_errors_and_reading_goes_on():
    data = b"a,b,c\n1,2,3\n1,2\n1,2,3,4\n1,2,3,,\n5,6,7\n"
    rows = rows_of(data, "csv")
    assert [(r.number, r.errors) for r, _ in rows] == [
        (2, None),
        (3, {"_row": ["has 2 values, the header has 3 columns"]}),
        (4, {"_row": ["has 4 values, the header has 3 columns"]}),
        (5, None),  # trailing empty cells are fine
        (6, None),
    ]
    assert rows[1][0].values is None
    assert rows[1][0].raw == {"a": "1", "b": "2"}
    assert rows[2][0].raw == {"a": "1", "b": "2", "c": "3", "column 4": "4"}


def test_csv_non_utf8_bytes_name_the_row_and_column():
    data = b"tutor_id,name\nt1,Ren\xe9\nt2,Zo\xc3\xab\n"
    fmt, _, header = check(data, "t.csv")
    assert header == ["tutor_id", "name"]
    rows = rows_of(data, fmt)
    assert [(r.number, r.values, r.errors) for r, _ in rows] == [
        (2, None, {"_row": ["not valid UTF-8 (byte 0xe9 in column 'name')"]}),
        (3, {"tutor_id": "t2", "name": "Zoë"}, None),
    ]
    assert rows[0][0].raw == {"tutor_id": "t1", "name": "Ren\ufffd"}
    json.dumps(rows[0][0].raw).encode("utf-8")  # storable


def test_csv_huge_field_is_a_row_error_not_a_crash():
    limits = Limits(max_field_bytes=1000)
    data = b"a,b\n1,2\n3," + b"x" * 5000 + b"\n4,5\n"
    rows = rows_of(data, "csv", limits)
    assert [(r.number, r.errors) for r, _ in rows] == [
        (2, None),
        (3, {"_row": ["not valid CSV: a field is longer than 1000 characters (ETL_UPLOAD_MAX_FIELD_BYTES)"]}),
        (4, None),
    ]
    assert rows[2][0].values == {"a": "4", "b": "5"}


def test_csv_huge_quoted_field_with_default_limit_is_a_row_error():
    data = b'a,b\n1,"' + b"y" * (LIMITS.max_field_bytes + 10) + b'"\n2,3\n'
    rows = rows_of(data, "csv")
    assert rows[0][0].number == 2
    assert rows[0][0].errors == {
        "_row": [
            f"not valid CSV: a field is longer than {LIMITS.max_field_bytes} characters (ETL_UPLOAD_MAX_FIELD_BYTES)"
        ]
    }
    assert rows[-1][0].values == {"a": "2", "b": "3"}
    import csv

    assert csv.field_size_limit() == 131072  # the process-wide limit is left as it was


def test_csv_overlong_line_is_skipped_without_holding_it():
    limits = Limits(max_field_bytes=10_000)  # lines are cut at 80 000 bytes
    data = b"a,b\n" + b"z," * 50_000 + b"\n1,2\n"
    rows = rows_of(data, "csv", limits)
    assert [(r.number, r.errors) for r, _ in rows] == [
        (2, {"_row": ["a line is longer than 80000 bytes (8 × ETL_UPLOAD_MAX_FIELD_BYTES)"]}),
        (3, None),
    ]
    assert rows[1][0].values == {"a": "1", "b": "2"}


def test_csv_duplicate_header_after_normalisation_is_refused():
    with pytest.raises(FileRefused) as exc:
        check(b"Tutor ID,name,tutor-id\nt1,Ada,t1\n")
    assert refused(exc) == (422, "duplicate_column")
    assert "'Tutor ID' and 'tutor-id'" in exc.value.message
    with pytest.raises(FileRefused) as exc:
        check(b"name,name\nx,y\n")
    assert refused(exc) == (422, "duplicate_column")
    assert "'name' appears twice" in exc.value.message


def test_note_columns_and_unnamed_columns_are_not_duplicates():
    data = b"_row,tutor_id,_errors,,\n2,t1,old error,,\n3,t2,,oops,\n"
    assert check(data)[2] == ["_row", "tutor_id", "_errors", "", ""]
    rows = rows_of(data, "csv")
    assert rows[0][0].values == {"_row": "2", "tutor_id": "t1", "_errors": "old error"}
    assert rows[1][0].errors == {"_row": ["has a value in column 4, which has no header"]}


# ----------------------------------------------------------------------------- json / ndjson


def test_json_array_streams_objects_and_flags_non_objects():
    items = [{"student_id": "s1", "grade_level": 5}, 7, {"student_id": "s2", "score": 0.5}, {"x": [1, {"y": None}]}]
    data = b"\xef\xbb\xbf \n" + json.dumps(items, indent=2).encode()
    fmt, note, header = check(data, "students.json", "application/json")
    assert (fmt, note, header) == ("json", None, [])
    rows = assert_resumes(data, "json")
    assert [(r.number, r.values, r.errors) for r, _ in rows] == [
        (1, items[0], None),
        (2, None, {"_row": ["not a JSON object"]}),
        (3, items[2], None),
        (4, items[3], None),
    ]
    assert isinstance(rows[2][0].values["score"], float)
    assert rows[1][1]["items"] == 2


def test_json_invalid_after_some_items_refuses_naming_where():
    data = b'[{"a": 1}, {"a": 2}, {"a": ]'
    got = []
    with pytest.raises(FileRefused) as exc:
        for row, _ in read_rows(io.BytesIO(data), "json", checkpoint=None, limits=LIMITS, size=len(data)):
            got.append(row.values)
    assert got == [{"a": 1}, {"a": 2}]
    assert refused(exc) == (422, "unreadable_file")
    assert "after item 2" in exc.value.message


def test_json_deeply_nested_or_huge_item_is_a_row_error_in_bounded_memory():
    depth = 200_000  # ijson.items would need gigabytes for this; the reader holds 64 levels
    data = b'[{"a": ' + b"[" * depth + b"]" * depth + b'}, {"b": 1}]'
    tracemalloc.start()
    try:
        rows = rows_of(data, "json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(r.number, r.values, r.errors) for r, _ in rows] == [
        (1, None, {"_row": ["not usable: nested more than 64 levels deep"]}),
        (2, {"b": 1}, None),
    ]
    assert peak < 20 * 1024 * 1024
    data = b'[{"a": "' + b"x" * 2000 + b'"}, {"b": 2}]'
    rows = rows_of(data, "json", Limits(max_field_bytes=100))
    assert [(r.number, r.values, r.errors) for r, _ in rows] == [
        (1, None, {"_row": ["not usable: larger than the limit for one item"]}),
        (2, {"b": 2}, None),
    ]


def test_json_data_after_the_array_is_refused_after_its_rows():
    data = b'[{"a": 1}] {"b": 2}'
    got = []
    with pytest.raises(FileRefused) as exc:
        for row, _ in read_rows(io.BytesIO(data), "json", checkpoint=None, limits=LIMITS, size=len(data)):
            got.append(row.values)
    assert got == [{"a": 1}]
    assert refused(exc) == (422, "unreadable_file")


def test_ndjson_lines_with_bad_ones_as_row_errors():
    lines = [
        b'{"student_id": "s1"}',
        b"",
        b"not json",
        b"[1, 2]",
        b'{"name": "Ren\xe9"}',
        b'{"n": NaN}',
        b'{"student_id": "s2", "grade_level": 3}',
    ]
    data = b"\xef\xbb\xbf" + b"\r\n".join(lines)
    fmt, note, header = check(data, "s.ndjson")
    assert (fmt, note, header) == ("ndjson", None, [])
    rows = assert_resumes(data, "ndjson")
    assert [(r.number, r.values, r.errors) for r, _ in rows] == [
        (1, {"student_id": "s1"}, None),
        (3, None, {"_line": ["not valid JSON: Expecting value at column 1"]}),
        (4, None, {"_row": ["not a JSON object"]}),
        (5, None, {"_line": ["not valid UTF-8 (byte 0xe9 at position 14)"]}),
        (6, None, {"_line": ["not valid JSON: NaN is not a JSON number"]}),
        (7, {"student_id": "s2", "grade_level": 3}, None),
    ]
    assert rows[1][0].raw == "not json"
    assert rows[3][0].raw == '{"name": "Ren\ufffd"}'


def test_ndjson_overlong_line_is_a_row_error():
    limits = Limits(max_field_bytes=100)
    data = b'{"a": 1}\n{"b": "' + b"q" * 500 + b'"}\n{"c": 3}\n'
    rows = rows_of(data, "ndjson", limits)
    assert [(r.number, r.errors) for r, _ in rows] == [
        (1, None),
        (2, {"_line": ["longer than 100 bytes (ETL_UPLOAD_MAX_FIELD_BYTES)"]}),
        (3, None),
    ]


# ----------------------------------------------------------------------------- xlsx

XLSX_ROWS = [
    ["Session ID", "Scheduled Start", "Started At", "Day", "Duration Minutes", "No Show"],
    ["s1", datetime(2026, 6, 10, 15, 0), time(15, 5), date(2026, 6, 10), 60, False],
    [None, None, None, None, None, None],
    ["s2", datetime(2026, 6, 11, 9, 30, 15), None, None, 45.0, True],
    ["s3", "text", None, None, None, None, None, None],
]


def test_xlsx_real_dates_times_and_empty_rows():
    data = xlsx_bytes(XLSX_ROWS)
    fmt, note, header = check(data, "sessions.xlsx")
    assert (fmt, note) == ("xlsx", None)
    assert header == XLSX_ROWS[0]
    rows = assert_resumes(data, "xlsx")
    assert (
        [(r.number, r.values, r.errors) for r, _ in rows]
        == [
            (
                2,
                {
                    "Session ID": "s1",
                    "Scheduled Start": datetime(2026, 6, 10, 15, 0),
                    "Started At": time(15, 5),
                    "Day": datetime(2026, 6, 10, 0, 0),  # Excel stores a date as a datetime
                    "Duration Minutes": 60,
                    "No Show": False,
                },
                None,
            ),
            (
                4,
                {
                    "Session ID": "s2",
                    "Scheduled Start": datetime(2026, 6, 11, 9, 30, 15),
                    "Started At": None,
                    "Day": None,
                    "Duration Minutes": 45,
                    "No Show": True,
                },
                None,
            ),
            (5, {"Session ID": "s3", "Scheduled Start": "text", **dict.fromkeys(XLSX_ROWS[0][2:])}, None),
        ]
    )
    assert rows[0][0].raw["Scheduled Start"] == "2026-06-10T15:00:00"
    assert rows[-1][1]["row"] == 5


def test_xlsx_value_beyond_the_header_is_a_row_error():
    data = xlsx_bytes([["a", "b"], [1, 2], [1, 2, "extra"], [3, 4]])
    rows = rows_of(data, "xlsx")
    assert [(r.number, r.errors) for r, _ in rows] == [
        (2, None),
        (3, {"_row": ["has a value in column 3, which has no header"]}),
        (4, None),
    ]
    assert rows[1][0].raw == {"a": 1, "b": 2, "column 3": "extra"}


def test_csv_named_file_that_is_xlsx_is_read_as_xlsx_with_a_note():
    data = xlsx_bytes([["student_id", "grade_level"], ["s1", 4]])
    fmt, note, header = check(data, "students.csv", "text/csv")
    assert fmt == "xlsx"
    assert note == "named .csv but the content is xlsx; read as xlsx"
    assert header == ["student_id", "grade_level"]
    assert [r.values for r, _ in rows_of(data, fmt)] == [{"student_id": "s1", "grade_level": 4}]


def test_xlsx_duplicate_header_is_refused():
    with pytest.raises(FileRefused) as exc:
        check(xlsx_bytes([["Tutor ID", "TUTOR_ID"], ["a", "b"]]))
    assert refused(exc) == (422, "duplicate_column")


def test_openpyxl_parses_with_defusedxml():
    assert openpyxl.DEFUSEDXML is True


def test_truncated_xlsx_is_unreadable():
    data = xlsx_bytes(XLSX_ROWS)
    for cut in (len(data) // 2, len(data) - 10):
        fmt, _ = detect(data[:cut], "x.xlsx", None)
        assert fmt == "xlsx"
        with pytest.raises(FileRefused) as exc:
            preflight(io.BytesIO(data[:cut]), fmt, LIMITS)
        assert refused(exc) == (422, "unreadable_file")


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in entries.items():
            z.writestr(name, content)
    return buf.getvalue()


def test_xlsx_zip_bomb_by_ratio_is_refused_from_the_directory():
    bomb = _zip({"[Content_Types].xml": b"<x/>", "xl/worksheets/sheet1.xml": b" " * (4 * 1024 * 1024)})
    with pytest.raises(FileRefused) as exc:
        preflight(io.BytesIO(bomb), "xlsx", LIMITS)
    assert refused(exc) == (413, "too_large_uncompressed")


def test_xlsx_declaring_huge_sizes_is_refused_before_decompressing():
    data = bytearray(xlsx_bytes([["a"], [1]]))
    # Patch every central-directory entry's uncompressed size to 4 GiB - 1: nothing is inflated.
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        data[at + 24 : at + 28] = struct.pack("<I", 0xFFFFFFF0)
        at = data.find(b"PK\x01\x02", at + 4)
    with pytest.raises(FileRefused) as exc:
        preflight(io.BytesIO(bytes(data)), "xlsx", LIMITS)
    assert refused(exc) == (413, "too_large_uncompressed")
    # and the total cap on an honest file
    with pytest.raises(FileRefused) as exc:
        preflight(io.BytesIO(xlsx_bytes([["a"], [1]])), "xlsx", Limits(max_uncompressed_bytes=1000))
    assert refused(exc) == (413, "too_large_uncompressed")


def test_xlsx_sheet_dimension_over_the_caps_is_refused():
    data = xlsx_bytes([["a", "b", "c"], *[[i, i, i] for i in range(10)]])
    with pytest.raises(FileRefused) as exc:
        preflight(io.BytesIO(data), "xlsx", Limits(max_sheet_rows=5))
    assert refused(exc) == (413, "too_many_rows")
    with pytest.raises(FileRefused) as exc:
        preflight(io.BytesIO(data), "xlsx", Limits(max_columns=2))
    assert refused(exc) == (413, "too_many_columns")


def test_zip_that_is_not_a_workbook_is_refused():
    with pytest.raises(FileRefused) as exc:
        check(_zip({"hello.txt": b"hi"}), "data.xlsx")
    assert exc.value.status == 422
    assert exc.value.code in ("unreadable_file", "no_worksheet")


def test_xlsx_corrupt_sheet_mid_file_refuses_naming_the_row_after_good_rows():
    good = xlsx_bytes([["a"], *[[f"v{i}"] for i in range(1, 6)]])
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        parts = {info.filename: z.read(info.filename) for info in z.infolist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    cut = sheet.index('<row r="4"')
    parts["xl/worksheets/sheet1.xml"] = (sheet[:cut] + '<row r="4"><c r="A4" t="inlineStr"><is><t>broken').encode()
    data = _zip(parts)
    preflight(io.BytesIO(data), "xlsx", LIMITS)  # the directory and the header are fine
    got = []
    with pytest.raises(FileRefused) as exc:
        for row, _ in read_rows(io.BytesIO(data), "xlsx", checkpoint=None, limits=LIMITS, size=len(data)):
            got.append(row.number)
    assert got == [2, 3]
    assert refused(exc) == (422, "unreadable_file")
    assert "at row 4" in exc.value.message


# ----------------------------------------------------------------------------- parquet

PARQUET_TABLE = pa.table(
    {
        "tutor_id": pa.array(["t1", "t2", "t3", "t4", "t5"]),
        "age": pa.array([30, None, 41, 25, 52], pa.int64()),
        "subjects": pa.array([["math"], ["art", "music"], [], None, ["x"]], pa.list_(pa.string())),
        "active": pa.array([True, False, None, True, False]),
        "rate": pa.array([1.5, 2.0, None, 0.0, 3.25]),
        "joined": pa.array([date(2024, 1, 2)] * 5, pa.date32()),
        "seen": pa.array([datetime(2026, 6, 1, 12, 0, 0, 123456)] * 5, pa.timestamp("ns")),
        "seen_utc": pa.array([datetime(2026, 6, 1, 12, 0, tzinfo=UTC)] * 5, pa.timestamp("us", tz="UTC")),
    }
)


def test_parquet_typed_columns_and_resume_across_row_groups():
    data = parquet_bytes(PARQUET_TABLE, row_group_size=2)
    fmt, note, header = check(data, "tutors.parquet")
    assert (fmt, note) == ("parquet", None)
    assert header == PARQUET_TABLE.column_names
    rows = assert_resumes(data, "parquet")
    assert [r.number for r, _ in rows] == [1, 2, 3, 4, 5]
    assert rows[1][0].values == {
        "tutor_id": "t2",
        "age": None,
        "subjects": ["art", "music"],
        "active": False,
        "rate": 2.0,
        "joined": date(2024, 1, 2),
        "seen": datetime(2026, 6, 1, 12, 0, 0, 123456),
        "seen_utc": datetime(2026, 6, 1, 12, 0, tzinfo=UTC),
    }
    assert rows[1][0].raw["seen"] == "2026-06-01T12:00:00.123456"
    assert rows[2][1] == {"rows": 3, "progress": 0.6, "count": 3, "decoded": rows[2][1]["decoded"]}


def test_parquet_corrupt_footer_or_truncated_is_unreadable():
    data = parquet_bytes(PARQUET_TABLE)
    footer_len = struct.unpack("<I", data[-8:-4])[0]
    corrupt = bytearray(data)
    start = len(data) - 8 - footer_len
    corrupt[start : start + footer_len] = b"\xff" * footer_len
    for bad in (bytes(corrupt), data[: len(data) // 2] + b"PAR1", data[:-3]):
        with pytest.raises(FileRefused) as exc:
            preflight(io.BytesIO(bad), "parquet", LIMITS)
        assert refused(exc) == (422, "unreadable_file")


def test_parquet_corrupt_row_group_mid_file_refuses_after_the_rows_before_it():
    table = pa.table({"id": [f"id-{i:05d}-" + "x" * 40 for i in range(3000)], "n": list(range(3000))})
    data = bytearray(parquet_bytes(table, row_group_size=1000))
    chunk = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(1).column(0)
    at = chunk.data_page_offset
    data[at : at + 200] = b"\xff" * 200  # the second row group's first page header
    data = bytes(data)
    preflight(io.BytesIO(data), "parquet", LIMITS)  # the footer is fine
    got = []
    with pytest.raises(FileRefused) as exc:
        for row, _ in read_rows(io.BytesIO(data), "parquet", checkpoint=None, limits=LIMITS, size=len(data)):
            got.append(row.number)
    assert got == list(range(1, 1001))
    assert refused(exc) == (422, "unreadable_file")
    assert "at row 1001" in exc.value.message


def test_parquet_row_group_over_the_cap_is_refused():
    data = parquet_bytes(PARQUET_TABLE)
    with pytest.raises(FileRefused) as exc:
        preflight(io.BytesIO(data), "parquet", Limits(max_row_group_bytes=100))
    assert refused(exc) == (413, "row_group_too_large")


def test_parquet_duplicate_column_is_refused():
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["Age", "age"])
    with pytest.raises(FileRefused) as exc:
        check(parquet_bytes(table))
    assert refused(exc) == (422, "duplicate_column")


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("head", "status", "code"),
    [
        (b"", 422, "empty_file"),
        (b"\xef\xbb\xbf \r\n\t", 422, "empty_file"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, 415, "legacy_excel"),
        ("\ufeffa,b\n1,2\n".encode("utf-16-le"), 415, "not_utf8"),
        ("\ufeffa,b\n".encode("utf-16-be"), 415, "not_utf8"),
        ("\ufeffa,b\n".encode("utf-32-le"), 415, "not_utf8"),
        ("a,b\n1,2\n".encode("utf-16-le"), 415, "binary_content"),  # UTF-16 without a BOM
        (b"a,b\n1,\x00\n", 415, "binary_content"),
        (b"\x1f\x8b\x08\x00", 415, "compressed_file"),
    ],
)
def test_detect_refuses(head, status, code):
    with pytest.raises(FileRefused) as exc:
        detect(head, "x.csv", "text/csv")
    assert refused(exc) == (status, code)
    assert exc.value.message


def test_detect_messages_say_what_to_do():
    with pytest.raises(FileRefused) as exc:
        detect(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "old.xls", None)
    assert "save it as .xlsx" in exc.value.message
    with pytest.raises(FileRefused) as exc:
        detect(codecs_bom16() + "a".encode("utf-16-le"), "a.csv", None)
    assert "save it as UTF-8" in exc.value.message


def codecs_bom16() -> bytes:
    return b"\xff\xfe"


@pytest.mark.parametrize(
    ("head", "filename", "content_type", "expected"),
    [
        (b'  [{"a": 1}]', "a.csv", None, ("json", "named .csv but the content is json; read as json")),
        (b'{"a": 1}\n{"a": 2}\n', "a.json", None, ("ndjson", "named .json but the content is ndjson; read as ndjson")),
        (b"PAR1\x00\x00", "a.csv", None, ("parquet", "named .csv but the content is parquet; read as parquet")),
        (b"a,b\n1,2\n", "a.xlsx", None, ("csv", "named .xlsx but the content is csv; read as csv")),
        (
            b"a,b\n1,2\n",
            None,
            "application/json",
            ("csv", "sent as application/json but the content is csv; read as csv"),
        ),
        (b"a\tb\n1\t2\n", "a.csv", None, ("tsv", None)),
        (b"a,b\n", "a.tsv", None, ("tsv", None)),
        (b"a;b\n", None, "text/tab-separated-values", ("tsv", None)),
        (b"a,b\n", None, None, ("csv", None)),
        (b"a,b\n", "data.txt", None, ("csv", None)),
    ],
)
def test_detect_content_over_name(head, filename, content_type, expected):
    assert detect(head, filename, content_type) == expected


def test_formats_and_empty_file_preflight():
    assert FORMATS == ("csv", "tsv", "json", "ndjson", "xlsx", "parquet")
    for fmt in FORMATS:
        with pytest.raises(FileRefused) as exc:
            preflight(io.BytesIO(b"\xef\xbb\xbf\n "), fmt, LIMITS)
        assert refused(exc) == (422, "empty_file")


def test_sniffing_a_hostile_sample_never_runs_the_standard_sniffer(monkeypatch):
    """csv.Sniffer's regular expressions take tens of seconds on a sample like this one; the
    delimiter is found by a linear count instead."""
    import csv

    def refuse(*args, **kwargs):
        raise AssertionError("csv.Sniffer ran")

    monkeypatch.setattr(csv.Sniffer, "sniff", refuse)
    monkeypatch.setattr(csv.Sniffer, "has_header", refuse)
    head = b',"a' * 21_000 + b"\n"
    assert detect(head, None, None)[0] == "csv"
    assert sniff_delimiter("a;b;c\n1;2;3\n") == ";"


# ----------------------------------------------------------------------------- flat payloads


def test_normalise():
    assert normalise("Session Number") == "session_number"
    assert normalise("  tutor-id ") == "tutor_id"
    assert normalise("Tutor  ID") == "tutor_id"
    assert normalise("EMAIL") == "email"


def test_coerce_csv_tutor_row_validates():
    rt = record_type("tutors")
    values = {
        "Tutor ID": "t-1",
        "Name": " Ada ",
        "Email": "ada@example.com",
        "Age": "36",
        "Location": "  ",
        "Subjects": "Math; physics ;math;",
        "Onboarding-Date": "2026-01-05",
        "Baseline Sessions Per Week": "2.5",
        "Status": "active",
        "_row": "7",
        "_errors": "age: too low",
    }
    payload = coerce(rt, values)
    assert payload == {
        "tutor_id": "t-1",
        "name": " Ada ",
        "email": "ada@example.com",
        "age": 36,
        "location": None,
        "subjects": ["Math", "physics", "math"],
        "onboarding_date": "2026-01-05",
        "baseline_sessions_per_week": 2.5,
        "status": "active",
    }
    data, errors = rt.validate(payload, AS_OF)
    assert errors == {}
    assert data["subjects"] == ["Math", "physics"]
    assert data["location"] is None
    assert data["age"] == 36


def test_coerce_session_bools_ints_and_json_list():
    rt = record_type("sessions")
    values = {
        "session_id": "s1",
        "tutor_id": "t1",
        "student_id": "st1",
        "session_number": "1",
        "scheduled_start": "2026-06-10T15:00:00Z",
        "duration_minutes": "60.0",
        "subject": "Math",
        "session_type": "regular",
        "no_show": "No",
        "technical_issues": "YES",
        "tutor_initiated_reschedule": "0",
        "learning_objectives_met": "",
        "engagement_score": "0.75",
        "late_start_minutes": "",
    }
    payload = coerce(rt, values)
    assert payload["session_number"] == 1
    assert payload["duration_minutes"] == 60.0
    assert (payload["no_show"], payload["technical_issues"], payload["tutor_initiated_reschedule"]) == (
        False,
        True,
        False,
    )
    assert payload["learning_objectives_met"] is None
    assert payload["engagement_score"] == 0.75
    data, errors = rt.validate(payload, AS_OF)
    assert errors == {}
    assert data["duration_minutes"] == 60
    assert data["is_first_session"] is True
    assert data["learning_objectives_met"] is None
    assert data["technical_issues"] is True


def test_coerce_leaves_bad_text_for_the_schema_to_name():
    rt = record_type("sessions")
    payload = coerce(
        rt,
        {
            "session_id": "s1",
            "tutor_id": "t1",
            "student_id": "st1",
            "session_number": "two",
            "scheduled_start": "2026-06-10T15:00:00Z",
            "duration_minutes": "1_000",
            "subject": "",
            "session_type": "regular",
            "no_show": "maybe",
            "Room": "B12",
        },
    )
    assert payload["session_number"] == "two"
    assert payload["duration_minutes"] == "1_000"
    assert payload["no_show"] == "maybe"
    assert payload["subject"] is None
    assert payload["room"] == "B12"
    data, errors = rt.validate(payload, AS_OF)
    assert data is None
    assert errors == {
        "session_number": ["Not a valid integer."],
        "duration_minutes": ["Not a valid integer."],
        "no_show": ["Not a valid boolean (use true or false)."],
        "subject": ["Field may not be null."],
        "room": ["Unknown field."],
    }


def test_coerce_feedback_json_array_list_and_optional_empties():
    rt = record_type("feedback")
    values = {
        "feedback_id": "f1",
        "session_id": "s1",
        "student_id": "st1",
        "tutor_id": "t1",
        "overall_rating": "5",
        "patience_rating": " ",
        "would_recommend": "true",
        "improvement_areas": '["pace", "examples; more"]',
        "free_text_feedback": "",
        "submitted_at": "2026-06-10 17:00",
    }
    payload = coerce(rt, values)
    assert payload["improvement_areas"] == ["pace", "examples; more"]
    assert payload["patience_rating"] is None
    assert payload["would_recommend"] is True
    data, errors = rt.validate(payload, AS_OF)
    assert errors == {}
    assert data["improvement_areas"] == ["pace", "examples; more"]
    assert data["free_text_feedback"] is None
    assert data["submitted_at"] == datetime(2026, 6, 10, 17, 0, tzinfo=UTC)
    # a broken JSON array stays text and the schema says it is not a list
    bad = coerce(rt, {**values, "improvement_areas": '["pace"'})
    assert bad["improvement_areas"] == '["pace"'
    assert rt.validate(bad, AS_OF)[1] == {"improvement_areas": ["Not a valid list."]}


def test_coerce_xlsx_typed_cells_end_to_end():
    rt = record_type("sessions")
    data = xlsx_bytes(
        [
            [
                *("Session ID", "Tutor ID", "Student ID", "Session Number", "Scheduled Start", "Actual Start"),
                *("Duration Minutes", "Subject", "Session Type", "No Show", "_errors"),
            ],
            [
                *("s1", "t1", 1001, 2, datetime(2026, 6, 10, 15, 0), datetime(2026, 6, 10, 15, 7, 30)),
                *(45, "Math", "trial", False, "fixed"),
            ],
        ]
    )
    (row, _), *_ = rows_of(data, "xlsx")
    payload = coerce(rt, row.values)
    assert payload == {
        "session_id": "s1",
        "tutor_id": "t1",
        "student_id": "1001",
        "session_number": 2,
        "scheduled_start": "2026-06-10T15:00:00",
        "actual_start": "2026-06-10T15:07:30",
        "duration_minutes": 45,
        "subject": "Math",
        "session_type": "trial",
        "no_show": False,
    }
    data_, errors = rt.validate(payload, AS_OF)
    assert errors == {}
    assert data_["late_start_minutes"] == 7
    assert data_["scheduled_start"] == datetime(2026, 6, 10, 15, 0, tzinfo=UTC)


def test_coerce_xlsx_date_cell_for_a_date_field_and_time_cell():
    rt = record_type("tutors")
    payload = coerce(
        rt,
        {
            "onboarding_date": datetime(2026, 1, 5),
            "updated_at": datetime(2026, 6, 1, 8, 0, tzinfo=UTC),
            "location": time(9, 30),
            "age": 40.0,
        },
    )
    assert payload == {
        "onboarding_date": "2026-01-05",
        "updated_at": "2026-06-01T08:00:00+00:00",
        "location": "09:30:00",
        "age": 40.0,
    }
    # a datetime with a time in a date field stays a datetime text: the schema refuses it
    assert coerce(rt, {"onboarding_date": datetime(2026, 1, 5, 10, 0)}) == {"onboarding_date": "2026-01-05T10:00:00"}
    assert rt.validate({"onboarding_date": "2026-01-05T10:00:00"}, AS_OF)[1]["onboarding_date"] == [
        "Not a valid date (YYYY-MM-DD)."
    ]


def test_coerce_parquet_typed_values_pass_through():
    rt = record_type("tutors")
    table = pa.table(
        {
            "tutor_id": ["t1"],
            "name": ["Ada"],
            "email": ["ada@example.com"],
            "subjects": pa.array([["math", "Math", "art"]], pa.list_(pa.string())),
            "onboarding_date": pa.array([date(2026, 1, 5)], pa.date32()),
            "baseline_sessions_per_week": pa.array([3], pa.int32()),
            "age": pa.array([None], pa.int64()),
            "status": ["active"],
            "updated_at": pa.array([datetime(2026, 6, 1, 8, 0)], pa.timestamp("ns")),
        }
    )
    (row, _), *_ = rows_of(parquet_bytes(table), "parquet")
    payload = coerce(rt, row.values)
    assert payload == {
        "tutor_id": "t1",
        "name": "Ada",
        "email": "ada@example.com",
        "subjects": ["math", "Math", "art"],
        "onboarding_date": "2026-01-05",
        "baseline_sessions_per_week": 3,
        "age": None,
        "status": "active",
        "updated_at": "2026-06-01T08:00:00",
    }
    data, errors = rt.validate(payload, AS_OF)
    assert errors == {}
    assert data["subjects"] == ["math", "art"]
    assert data["updated_at"] == datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    assert data["baseline_sessions_per_week"] == 3.0


def test_coerce_csv_row_end_to_end_with_missing_required_and_unknown_column():
    rt = record_type("students")
    data = b"Student ID,Grade Level,Enrolled On,Nickname\ns1,4,2025-09-01,\n,x,,Bo\n"
    rows = rows_of(data, "csv")
    results = [rt.validate(coerce(rt, r.values), AS_OF) for r, _ in rows]
    assert results[0] == (
        {"student_id": "s1", "grade_level": 4, "enrolled_on": date(2025, 9, 1), "name": None}
        | {"source": None, "event_time": None},
        {},
    )
    assert results[1] == (
        None,
        {
            "student_id": ["Field may not be null."],
            "grade_level": ["Not a valid integer."],
            "nickname": ["Unknown field."],
        },
    )


# ----------------------------------------------------------------------------- memory


@pytest.mark.slow
def test_a_50_mb_csv_streams_in_bounded_memory(tmp_path):
    path = tmp_path / "big.csv"
    notes = b"free text that pads the line out " * 28
    with path.open("wb") as out:
        out.write(b"student_id,name,enrolled_on,grade_level,notes\n")
        block = b"".join(b's%07d,Some Name,2025-09-01,%d,"%s"\n' % (i, i % 16, notes) for i in range(1000))
        for _ in range(50 * 1024 * 1024 // len(block) + 1):
            out.write(block)
    size = path.stat().st_size
    assert size >= 50 * 1024 * 1024
    tracemalloc.start()
    try:
        count = 0
        last = None
        with path.open("rb") as f:
            for row, cp in read_rows(f, "csv", checkpoint=None, limits=LIMITS, size=size):
                count += 1
                last = cp
                assert row.errors is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count > 50_000
    assert last["offset"] == size
    assert last["progress"] == 1.0
    assert peak < 20 * 1024 * 1024


def test_coerce_text_cells_at_the_edges_of_the_usual_forms():
    """Digits, booleans and text fields: the usual cells and the ones beside them."""
    rt = record_type("sessions")
    base = {"session_id": "007", "tutor_id": " t1 ", "student_id": "'=st1", "scheduled_start": "2026-06-10T15:00:00Z"}
    cases = {
        "42": 42,
        " 42 ": 42,
        "+7": 7,
        "-3": -3,
        "0042": 42,
        "1e3": 1000.0,
        "١٢": "١٢",  # Arabic-Indic digits are not numeric text here: the schema names them
        "²": "²",
        "1" * 21: "1" * 21,
    }
    for text, expected in cases.items():
        payload = coerce(rt, {**base, "session_number": text})
        assert payload["session_number"] == expected, text
        assert type(payload["session_number"]) is type(expected), text
    bools = {"true": True, "false": False, "1": True, "0": False, " Yes ": True, "NO": False, "TRUE": True}
    for text, expected in bools.items():
        assert coerce(rt, {**base, "no_show": text})["no_show"] is expected, text
    assert coerce(rt, {**base, "no_show": "maybe"})["no_show"] == "maybe"
    payload = coerce(rt, base)
    # text fields keep their text as it is (trimmed only by the schema), a quoted formula unquoted
    assert (payload["session_id"], payload["tutor_id"], payload["student_id"]) == ("007", " t1 ", "=st1")
    assert payload["scheduled_start"] == "2026-06-10T15:00:00Z"
    data, errors = rt.validate(coerce(rt, {**base, "session_number": "١٢"}), AS_OF)
    assert data is None and "session_number" in errors


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "json", "xlsx", "parquet"])
def test_every_row_has_its_own_checkpoint(fmt):
    """The caps' counts are written into each row's checkpoint: no two rows share one."""
    records = [{"a": str(i), "b": f"x{i}"} for i in range(5)]
    if fmt == "csv":
        data = b"a,b\n" + b"".join(f"{r['a']},{r['b']}\n".encode() for r in records)
    elif fmt == "ndjson":
        data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    elif fmt == "json":
        data = json.dumps(records).encode()
    elif fmt == "xlsx":
        data = xlsx_bytes([["a", "b"]] + [[r["a"], r["b"]] for r in records])
    else:
        data = parquet_bytes(pa.Table.from_pylist(records), row_group_size=2)
    rows = rows_of(data, fmt)
    assert [cp["count"] for _, cp in rows] == [1, 2, 3, 4, 5]
    assert len({id(cp) for _, cp in rows}) == 5
    assert [cp["decoded"] for _, cp in rows] == sorted(cp["decoded"] for _, cp in rows)


def test_csv_row_raw_is_its_values_and_an_empty_record_is_skipped():
    data = b"a,b\n1,x\n,\n\xff2,y\n3,z\n"
    rows = rows_of(data, "csv")
    assert [r.number for r, _ in rows] == [2, 4, 5]
    assert rows[0][0].raw == rows[0][0].values == {"a": "1", "b": "x"}
    assert rows[0][0].size == 2
    assert rows[1][0].values is None and rows[1][0].raw == {"a": "\ufffd2", "b": "y"}
    assert rows[1][0].size == 3
