"""The caps on what an upload's values add up to, whatever the bytes of the file: one value, one
row, the whole file, and its rows. Small hostile files (one parquet dictionary value or one xlsx
shared string referenced by every row) are built here, the caps set small so that they are fast."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from etl_app.config import Settings
from etl_app.uploads import parse
from etl_app.uploads.caps import upload_limits
from etl_app.uploads.formats import FileRefused, Limits, Row, preflight, read_rows

from tests.helpers.parsing import parse_slice_as_the_task

BIG = "x" * 3000
CAP = "(ETL_UPLOAD_MAX_FIELD_BYTES)"


def rows_of(data: bytes, fmt: str, limits: Limits, checkpoint: dict | None = None) -> list[tuple[Row, dict]]:
    return list(read_rows(io.BytesIO(data), fmt, checkpoint=checkpoint, limits=limits, size=len(data)))


def read_until_refused(data: bytes, fmt: str, limits: Limits) -> tuple[list[Row], FileRefused]:
    got: list[Row] = []
    with pytest.raises(FileRefused) as exc_info:
        for row, _ in read_rows(io.BytesIO(data), fmt, checkpoint=None, limits=limits, size=len(data)):
            got.append(row)
    return got, exc_info.value


def dictionary_parquet(n: int, value: str = BIG, *, lists: bool = False) -> bytes:
    """``student_id`` s-1..s-n and ``name``: one dictionary value referenced by every row (or,
    with ``lists``, a list column whose element is that value)."""
    names = pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array([value]))
    columns: dict = {"student_id": [f"s-{i}" for i in range(1, n + 1)], "name": names}
    if lists:
        columns["name"] = pa.array([["ok", value]] * n)
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, compression="zstd", use_dictionary=True)
    return buf.getvalue()


_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
_DOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml"


def shared_string_xlsx(n: int, value: str = BIG) -> bytes:
    """A workbook whose one shared string is the ``name`` cell of every row (openpyxl writes
    strings inline, so the parts are written here)."""
    strings = ["student_id", "name", value, *(f"s-{i}" for i in range(1, n + 1))]
    sst = "".join(f"<si><t>{s}</t></si>" for s in strings)
    rows = '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>' + "".join(
        f'<row r="{i + 1}"><c r="A{i + 1}" t="s"><v>{i + 2}</v></c><c r="B{i + 1}" t="s"><v>2</v></c></row>'
        for i in range(1, n + 1)
    )
    parts = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            f'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{_TYPE}.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{_TYPE}.worksheet+xml"/>'
            f'<Override PartName="/xl/sharedStrings.xml" ContentType="{_TYPE}.sharedStrings+xml"/></Types>'
        ),
        "_rels/.rels": (
            f'<Relationships xmlns="{_RELS}"><Relationship Id="rId1" Type="{_DOC}/officeDocument" '
            'Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{_MAIN}" xmlns:r="{_DOC}"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets>'
            "</workbook>"
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{_RELS}"><Relationship Id="rId1" Type="{_DOC}/worksheet" '
            f'Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="{_DOC}/sharedStrings" '
            'Target="sharedStrings.xml"/></Relationships>'
        ),
        "xl/sharedStrings.xml": f'<sst xmlns="{_MAIN}" count="{2 * n + 2}" uniqueCount="{n + 3}">{sst}</sst>',
        "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{_MAIN}"><sheetData>{rows}</sheetData></worksheet>',
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(name, '<?xml version="1.0" encoding="UTF-8"?>' + text)
    return buf.getvalue()


def csv_rows(n: int, value: str = "Ada") -> bytes:
    return b"student_id,name\n" + b"".join(f"s-{i},{value}\n".encode() for i in range(1, n + 1))


def ndjson_rows(n: int, value: str = "Ada") -> bytes:
    return b"".join(json.dumps({"student_id": f"s-{i}", "name": value}).encode() + b"\n" for i in range(1, n + 1))


def json_rows(n: int, value: str = "Ada") -> bytes:
    return json.dumps([{"student_id": f"s-{i}", "name": value} for i in range(1, n + 1)]).encode()


FILES = {
    "csv": csv_rows,
    "tsv": lambda n, value="Ada": csv_rows(n, value).replace(b",", b"\t"),
    "ndjson": ndjson_rows,
    "json": json_rows,
    "xlsx": shared_string_xlsx,
    "parquet": dictionary_parquet,
}


# ----------------------------------------------------------------------------- one value


@pytest.mark.parametrize("fmt", ["parquet", "xlsx", "json"])
def test_a_value_over_the_cap_makes_its_row_an_error_naming_the_column_and_is_not_kept(fmt):
    data = FILES[fmt](40, BIG)
    limits = Limits(max_field_bytes=1000, max_row_bytes=100_000)
    rows = [row for row, _ in rows_of(data, fmt, limits)]
    assert len(rows) == 40
    for row in rows:
        assert row.values is None
        assert row.errors == {"_row": [f"column 'name' holds a value of size 3000, over the cap of 1000 {CAP}"]}
        assert row.raw["name"] == "<a value of size 3000, not kept>"
        assert len(json.dumps(row.raw)) < 100
    assert [row.raw["student_id"] for row in rows[:2]] == ["s-1", "s-2"]


def test_a_parquet_string_column_dictionary_encoded_on_disk_only_is_measured_too():
    buf = io.BytesIO()  # no arrow schema stored: the column reads back as plain strings
    table = pa.table({"student_id": [f"s-{i}" for i in range(1, 301)], "name": pa.array([BIG] * 300)})
    pq.write_table(table, buf, compression="zstd", use_dictionary=True, store_schema=False)
    rows = [row for row, _ in rows_of(buf.getvalue(), "parquet", Limits(max_field_bytes=1000))]
    assert len(rows) == 300 and all(row.values is None for row in rows)
    assert rows[-1].errors == {"_row": [f"column 'name' holds a value of size 3000, over the cap of 1000 {CAP}"]}
    assert rows[-1].raw == {"student_id": "s-300", "name": "<a value of size 3000, not kept>"}


def test_a_parquet_list_element_over_the_cap_makes_its_row_an_error():
    rows = [row for row, _ in rows_of(dictionary_parquet(5, lists=True), "parquet", Limits(max_field_bytes=1000))]
    assert [row.errors for row in rows] == [
        {"_row": [f"column 'name' holds a value of size 3000, over the cap of 1000 {CAP}"]}
    ] * 5
    assert rows[0].raw == {"student_id": "s-1", "name": "<a value of size 3002, not kept>"}


def test_a_parquet_file_with_rows_under_and_over_the_cap_resumes_anywhere():
    names = pa.array(["Ada", BIG, "Bo", BIG, "Cy"]).dictionary_encode()
    buf = io.BytesIO()
    pq.write_table(pa.table({"student_id": ["s-1", "s-2", "s-3", "s-4", "s-5"], "name": names}), buf)
    data, limits = buf.getvalue(), Limits(max_field_bytes=1000)
    full = rows_of(data, "parquet", limits)
    assert [(r.number, r.values and r.values["name"], bool(r.errors)) for r, _ in full] == [
        (1, "Ada", False), (2, None, True), (3, "Bo", False), (4, None, True), (5, "Cy", False),
    ]  # fmt: skip
    for k, (_, cp) in enumerate(full):
        rest = rows_of(data, "parquet", limits, checkpoint=cp)
        assert [r.number for r, _ in rest] == list(range(k + 2, 6))


# ----------------------------------------------------------------------------- one row


@pytest.mark.parametrize("fmt", ["csv", "tsv", "ndjson", "json", "xlsx", "parquet"])
def test_a_row_whose_values_add_up_over_the_cap_is_an_error(fmt):
    data = FILES[fmt](3, "y" * 600)
    limits = Limits(max_field_bytes=1000, max_row_bytes=500)
    rows = [row for row, _ in rows_of(data, fmt, limits)]
    assert [row.number for row in rows] == ([2, 3, 4] if fmt in ("csv", "tsv", "xlsx") else [1, 2, 3])
    for row in rows:
        assert row.values is None
        assert row.errors == {
            "_row": ["the row's values add up to size 603, over the cap of 500 (ETL_UPLOAD_MAX_ROW_BYTES)"]
        }
        assert len(json.dumps(row.raw)) < 1000


# ----------------------------------------------------------------------------- the whole file


@pytest.mark.parametrize("fmt", ["csv", "tsv", "ndjson", "json", "xlsx", "parquet"])
def test_reading_stops_at_the_row_past_the_decoded_cap_and_keeps_the_rows_before(fmt):
    data = FILES[fmt](30, "z" * 100)
    limits = Limits(max_decoded_bytes=1000)
    rows, exc = read_until_refused(data, fmt, limits)
    assert 5 <= len(rows) < 10 and all(row.values for row in rows)
    assert (exc.status, exc.code) == (413, "too_large_decoded")
    assert "more than 1000 (ETL_UPLOAD_MAX_DECODED_BYTES" in exc.message
    assert f"stopped at row {rows[-1].number + 1}, the rows before it are kept" in exc.message


def test_the_decoded_cap_counts_across_a_resumed_read():
    data, limits = csv_rows(30, "z" * 100), Limits(max_decoded_bytes=1000)
    full, refusal = read_until_refused(data, "csv", limits)
    reading = read_rows(io.BytesIO(data), "csv", checkpoint=None, limits=limits, size=len(data))
    _, cp = [next(reading) for _ in range(3)][-1]
    rest: list[Row] = []
    with pytest.raises(FileRefused) as exc_info:
        for row, _ in read_rows(io.BytesIO(data), "csv", checkpoint=cp, limits=limits, size=len(data)):
            rest.append(row)
    assert [row.number for row in rest] == [row.number for row in full[3:]]
    assert exc_info.value.message == refusal.message


def test_a_small_file_may_not_unpack_its_values_past_the_expansion_cap():
    data = dictionary_parquet(300, "x" * 300_000)  # under 2 KB, 90 MB of values
    assert len(data) < 2000
    rows, exc = read_until_refused(data, "parquet", Limits())
    assert len(rows) == 223  # 64 MiB: the floor of the cap
    assert (exc.code, exc.status) == ("too_large_decoded", 413)
    assert "(200 times the file's size, ETL_UPLOAD_MAX_EXPANSION)" in exc.message


# ----------------------------------------------------------------------------- rows


@pytest.mark.parametrize("fmt", ["csv", "tsv", "ndjson", "json", "xlsx", "parquet"])
def test_reading_stops_at_the_row_past_the_rows_cap(fmt):
    rows, exc = read_until_refused(FILES[fmt](12, "Ada"), fmt, Limits(max_rows=10))
    assert len(rows) == 10
    assert (exc.status, exc.code) == (413, "too_many_rows")
    assert f"more than 10 rows (ETL_UPLOAD_MAX_ROWS): reading stopped at row {rows[-1].number + 1}" in exc.message


def test_an_xlsx_sheet_past_the_rows_cap_of_the_settings_stops_there():
    limits = upload_limits(Settings.from_env({"ETL_UPLOAD_MAX_ROWS": "10"}))
    rows, exc = read_until_refused(shared_string_xlsx(12, "Ada"), "xlsx", limits)
    assert [row.number for row in rows] == list(range(2, 12))
    assert (exc.status, exc.code) == (413, "too_many_rows")
    assert "(ETL_UPLOAD_MAX_ROWS): reading stopped at row 12, the rows before it are kept" in exc.message


def test_a_parquet_footer_declaring_more_rows_than_the_cap_is_refused_whole():
    with pytest.raises(FileRefused) as exc_info:
        preflight(io.BytesIO(dictionary_parquet(12, "Ada")), "parquet", Limits(max_rows=10))
    assert (exc_info.value.status, exc_info.value.code) == (413, "too_many_rows")
    assert "The file has 12 rows, more than 10 (ETL_UPLOAD_MAX_ROWS)" in exc_info.value.message


def test_the_caps_come_from_the_settings():
    settings = Settings.from_env(
        {
            "ETL_UPLOAD_MAX_FIELD_BYTES": "100",
            "ETL_UPLOAD_MAX_ROW_BYTES": "200",
            "ETL_UPLOAD_MAX_EXPANSION": "3",
            "ETL_UPLOAD_MAX_ROWS": "7",
            "ETL_MAX_UPLOAD_BYTES": "1000",
        }
    )
    limits = upload_limits(settings)
    assert (limits.max_field_bytes, limits.max_row_bytes, limits.max_expansion) == (100, 200, 3)
    assert (limits.max_rows, limits.max_sheet_rows, limits.max_decoded_bytes) == (7, 8, 5000)
    assert upload_limits(Settings.from_env({"ETL_UPLOAD_MAX_DECODED_BYTES": "123"})).max_decoded_bytes == 123
    with pytest.raises(ValueError, match="ETL_UPLOAD_MAX_ROWS"):
        Settings.from_env({"ETL_UPLOAD_MAX_ROWS": "0"})


# ----------------------------------------------------------------------------- end to end


def upload(client, auth, data: bytes, name: str):
    return client.post(
        "/api/v1/students/upload", data={"file": (io.BytesIO(data), name)}, headers=auth,
        content_type="multipart/form-data",
    )  # fmt: skip


def parse_all(app, engine, ident: uuid.UUID) -> None:
    runtime = app.extensions["etl"]
    for _ in range(100):
        outcome = parse_slice_as_the_task(runtime, engine, ident, slice_chunks=2)
        if outcome != parse.MORE:
            return
    raise AssertionError("the parse did not end")


def stored(conn, ident: uuid.UUID) -> dict:
    upload_row = conn.execute(sa.text("SELECT status, error, rows_read FROM uploads WHERE id = :i"), {"i": ident})
    status, error, rows_read = upload_row.one()
    counts = conn.execute(sa.text("SELECT accepted, rejected FROM ingestions WHERE id = :i"), {"i": ident}).one()
    rejections = conn.execute(
        sa.text("SELECT errors, raw, pg_column_size(raw) AS size FROM rejections WHERE ingestion_id = :i"), {"i": ident}
    ).all()
    return {
        "status": status, "error": error, "rows_read": rows_read, "accepted": counts[0], "rejected": counts[1],
        "rejections": rejections,
    }  # fmt: skip


@pytest.mark.parametrize(("fmt", "name"), [("parquet", "students.parquet"), ("xlsx", "students.xlsx")])
def test_an_upload_whose_one_value_every_row_references_stores_small_rejections(make_app, auth, engine, fmt, name):
    app = make_app(upload_max_field_bytes=1000, chunk_size=10)
    r = upload(app.test_client(), auth, FILES[fmt](25, BIG), name)
    assert r.status_code == 202, r.get_json()
    ident = uuid.UUID(r.get_json()["ingestion_id"])
    parse_all(app, engine, ident)
    with engine.connect() as conn:
        got = stored(conn, ident)
    assert (got["status"], got["rows_read"], got["accepted"], got["rejected"]) == ("parsed", 25, 0, 25)
    for errors, raw, size in got["rejections"]:
        assert errors == {"_row": [f"column 'name' holds a value of size 3000, over the cap of 1000 {CAP}"]}
        assert raw["name"] == "<a value of size 3000, not kept>"
        assert size < 200


def test_an_upload_past_the_decoded_cap_fails_at_that_row_keeping_the_rows_before(make_app, auth, engine, unique):
    app = make_app(upload_max_decoded_bytes=2000, chunk_size=4)
    data = b"student_id,name,grade_level\n" + b"".join(
        f"{unique}-{i},{'N' * 90},3\n".encode() for i in range(1, 41)
    )  # about 100 characters a row
    r = upload(app.test_client(), auth, data, "students.csv")
    assert r.status_code == 202, r.get_json()
    ident = uuid.UUID(r.get_json()["ingestion_id"])
    parse_all(app, engine, ident)
    with engine.connect() as conn:
        got = stored(conn, ident)
        kept = conn.execute(sa.text("SELECT count(*) FROM raw_records WHERE ingestion_id = :i"), {"i": ident}).scalar()
    assert got["status"] == "failed"
    assert got["rows_read"] == got["accepted"] == kept == 19  # every row before the one past the cap
    assert "more than 2000 (ETL_UPLOAD_MAX_DECODED_BYTES" in got["error"]
    assert "reading stopped at row 21, the rows before it are kept" in got["error"]


def test_an_upload_past_the_rows_cap_fails_or_is_refused_whole(make_app, auth, engine, unique):
    app = make_app(upload_max_rows=10, chunk_size=4)
    client = app.test_client()
    refused = upload(client, auth, dictionary_parquet(12, "Ada"), "students.parquet")
    assert refused.status_code == 413
    assert refused.get_json()["error"] == "too_many_rows"
    assert "ETL_UPLOAD_MAX_ROWS" in refused.get_json()["message"]
    data = b"student_id,name,grade_level\n" + b"".join(f"{unique}-{i},Ada,3\n".encode() for i in range(1, 13))
    r = upload(client, auth, data, "students.csv")
    assert r.status_code == 202, r.get_json()
    ident = uuid.UUID(r.get_json()["ingestion_id"])
    parse_all(app, engine, ident)
    with engine.connect() as conn:
        got = stored(conn, ident)
    assert (got["status"], got["rows_read"], got["accepted"]) == ("failed", 10, 10)
    assert "more than 10 rows (ETL_UPLOAD_MAX_ROWS): reading stopped at row 12" in got["error"]
