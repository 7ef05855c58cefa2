"""GET /api/v1/ingestions/{id}/rejections?format=csv|xlsx: cells a spreadsheet would run as a
formula come back neutralised (CSV: a ``'`` in front, every cell quoted; XLSX: text cells), and
the upload parser reads the corrected file back as it was downloaded."""

from __future__ import annotations

import csv
import io

from openpyxl import load_workbook

from etl_app.record_types import get_registry
from etl_app.uploads import flat

from tests.helpers.payloads import student

DANGEROUS = ["=1+2", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def _ingestion(client, auth, unique) -> str:
    batch = [student(f"{unique}-ok")] + [
        {"student_id": f"{unique}-{i}", "name": name, "grade_level": -5} for i, name in enumerate(DANGEROUS)
    ]
    r = client.post("/api/v1/students/batch", json=batch, headers=auth)
    assert r.status_code == 202 and r.get_json()["rejected"] == len(DANGEROUS)
    return r.get_json()["ingestion_id"]


def test_csv_cells_that_a_spreadsheet_would_run_get_a_quote_and_numbers_stay(client, auth, unique):
    ident = _ingestion(client, auth, unique)
    r = client.get(f"/api/v1/ingestions/{ident}/rejections?format=csv", headers=auth)
    text = r.get_data(as_text=True)
    header, *rows = list(csv.reader(io.StringIO(text, newline="")))
    names = [row[header.index("name")] for row in rows]
    assert names == ["'" + name for name in DANGEROUS]
    assert [row[header.index("grade_level")] for row in rows] == ["-5"] * len(DANGEROUS)  # a number as it is
    assert all(line.startswith('"') for line in text.split("\r\n") if line)  # every cell quoted

    # The corrected file goes back through the upload parser as it was downloaded.
    fields = flat.coerce(get_registry()["students"], dict(zip(header, rows[0], strict=True)))
    assert (fields["name"], fields["grade_level"]) == ("=1+2", -5)
    assert [flat.coerce(get_registry()["students"], {"name": n})["name"] for n in names[:4]] == DANGEROUS[:4]


def test_the_xlsx_download_has_the_csvs_rows_as_text_cells(client, auth, unique):
    ident = _ingestion(client, auth, unique)
    url = f"/api/v1/ingestions/{ident}/rejections"
    r = client.get(f"{url}?format=xlsx", headers=auth)
    assert r.status_code == 200 and r.mimetype.endswith("spreadsheetml.sheet")
    assert r.headers["Content-Disposition"] == f"attachment; filename=rejections-{ident}.xlsx"
    assert r.headers["X-Rejections-Not-Stored"] == "0"
    sheet = load_workbook(io.BytesIO(r.get_data())).active
    cells = [list(row) for row in sheet.iter_rows()]
    csv_rows = list(csv.reader(io.StringIO(client.get(f"{url}?format=csv", headers=auth).get_data(as_text=True))))
    assert [[c.value or "" for c in row] for row in cells] == [
        [(value[1:] if value.startswith("'") else value).replace("\r", "\n") for value in row] for row in csv_rows
    ]  # the same cells, without the quote (a text cell is never run); XML reads a CR as a line feed
    assert all(c.data_type == "s" and c.number_format == "@" for row in cells for c in row if c.value)
    names = [row[csv_rows[0].index("name")].value for row in cells[1:]]
    assert names == [*DANGEROUS[:-1], "\nx"] and cells[1][csv_rows[0].index("grade_level")].value == "-5"


def test_a_download_format_is_one_of_json_csv_xlsx(client, auth, unique):
    ident = _ingestion(client, auth, unique)
    r = client.get(f"/api/v1/ingestions/{ident}/rejections?format=ods", headers=auth)
    assert (r.status_code, r.get_json()["error"]) == (400, "invalid_parameter")


def test_raw_holds_only_the_fields_that_fit_no_column(client, auth, unique):
    refused = {**student(f"{unique}-x"), "nickname": "Ace"}
    r = client.post("/api/v1/students/batch", json=[student(f"{unique}-ok"), refused], headers=auth)
    assert r.status_code == 202 and r.get_json()["rejected"] == 1, r.get_json()
    text = client.get(f"/api/v1/ingestions/{r.get_json()['ingestion_id']}/rejections?format=csv", headers=auth)
    [row] = list(csv.DictReader(io.StringIO(text.get_data(as_text=True), newline="")))
    assert row["student_id"] == f"{unique}-x" and row["name"] == refused["name"]  # the known fields in their columns
    assert row["_raw"] == '{"nickname":"Ace"}'  # and only the unknown one here, not the whole record again
    assert "nickname" in row["_errors"]
