"""Uploads end to end: a file over HTTP → stored in PostgreSQL → parsed by a real worker → tables,
with the rows it refused kept as rejections with their row numbers."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import date, datetime

import openpyxl
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.lineage_server import LineageServer
from tests.helpers.procs import running_stack, wait_until
from tests.helpers.support import redis_db

pytestmark = pytest.mark.slow

LIMIT = 2 * 1024 * 1024  # ETL_MAX_UPLOAD_BYTES of this module's web process
HEADER = ["Tutor ID", "Name", "Email", "Subjects", "Onboarding-Date", "Status", "Age"]


@pytest.fixture(scope="module")
def lineage():
    server = LineageServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def stack(database_url, tmp_path_factory, lineage):
    """The e2e stack (its ``api`` fixture serves this module's), with a small upload limit, small
    chunks and a lineage endpoint."""
    env = {
        "ETL_MAX_UPLOAD_BYTES": str(LIMIT),
        "ETL_CHUNK_SIZE": "2",  # several chunks even for small files
        "OPENLINEAGE_URL": lineage.url,
    }
    with running_stack(database_url, redis_db(15), tmp_path_factory.mktemp("logs"), **env) as s:
        s.worker()
        s.web()
        yield s


def tutors(prefix: str) -> list[list]:
    """Four rows as a spreadsheet holds them: the third has an e-mail the schema refuses."""
    return [
        [f"{prefix}-1", 'Ada, "the" Tutor\nof Maths', "ada@example.org", "Math;Physics", "2026-01-05", "active", "31"],
        [f"{prefix}-2", "Bo", "bo@example.org", '["Art"]', "2026-02-01", "inactive", ""],
        [f"{prefix}-3", "Cy", "not-an-email", "Math", "2026-03-01", "active", "40"],
        [f"{prefix}-4", "Di", "di@example.org", "History ; Latin", "2026-04-01", "active", "29"],
    ]


def as_csv(rows: list[list], delimiter: str = ",", bom: bool = False) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return (("\ufeff" if bom else "") + out.getvalue()).encode()


def as_objects(rows: list[list]) -> list[dict]:
    keys = ["tutor_id", "name", "email", "subjects", "onboarding_date", "status", "age"]
    out = []
    for row in rows:
        obj = dict(zip(keys, row, strict=True))
        obj["subjects"] = [s.strip() for s in obj["subjects"].strip("[]").replace('"', "").split(";")]
        obj["age"] = int(obj["age"]) if obj["age"] else None
        out.append(obj)
    return out


def as_xlsx(rows: list[list]) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(HEADER)
    for row in rows:
        y, m, d = (int(p) for p in row[4].split("-"))
        ws.append([*row[:4], date(y, m, d), row[5], int(row[6]) if row[6] else None])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def as_parquet(rows: list[list]) -> bytes:
    objs = as_objects(rows)
    table = pa.table(
        {
            "Tutor ID": [o["tutor_id"] for o in objs],
            "Name": [o["name"] for o in objs],
            "Email": [o["email"] for o in objs],
            "Subjects": [o["subjects"] for o in objs],
            "Onboarding-Date": [date.fromisoformat(o["onboarding_date"]) for o in objs],
            "Status": [o["status"] for o in objs],
            "Age": pa.array([o["age"] for o in objs], pa.int64()),
        }
    )
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


FILES = {
    "csv": ("tutors.csv", lambda rows: as_csv(rows)),
    "csv-semicolon-bom": ("tutors.csv", lambda rows: as_csv(rows, ";", bom=True)),
    "tsv": ("tutors.tsv", lambda rows: as_csv(rows, "\t")),
    "json": ("tutors.json", lambda rows: orjson.dumps(as_objects(rows))),
    "ndjson": ("tutors.ndjson", lambda rows: b"\n".join(orjson.dumps(o) for o in as_objects(rows)) + b"\n"),
    "xlsx": ("tutors.xlsx", as_xlsx),
    "parquet": ("tutors.parquet", as_parquet),
    "xlsx-named-csv": ("tutors.csv", as_xlsx),
}
# The row a refused record is reported at: the spreadsheet row (header = 1) for flat files, the
# line for NDJSON, the item for a JSON array or parquet.
THIRD_ROW = {"json": 3, "ndjson": 3, "parquet": 3}


@pytest.mark.parametrize("kind", list(FILES))
def test_every_format_lands_and_keeps_its_refused_row(api, sql, unique, kind):
    prefix = f"{unique}-{kind}"
    name, build = FILES[kind]
    r = api.upload("tutors", name, build(tutors(prefix)))
    assert r.status_code == 202, r.text
    body = r.json()
    expected_format = kind.split("-")[0]
    assert body["upload"]["format"] == expected_format and body["upload"]["filename"] == name
    assert (body["upload"]["note"] is not None) == (kind == "xlsx-named-csv")
    ingestion = api.wait_settled(body["ingestion_id"])
    assert ingestion["status"] == "finished", ingestion
    assert ingestion["counts"] == {
        "received": 3,
        "in_flight": 0,
        "persisted": 3,
        "dead": 0,
        "rejected": 1,
        "rejections_not_stored": 0,
    }

    stored = sql(
        "SELECT tutor_id, name, subjects, onboarding_date, status, age FROM tutors WHERE tutor_id LIKE :p "
        "ORDER BY tutor_id",
        p=f"{prefix}-%",
    )
    first_name = 'Ada, "the" Tutor\nof Maths'
    assert [tuple(row) for row in stored] == [
        (f"{prefix}-1", first_name, ["Math", "Physics"], date(2026, 1, 5), "active", 31),
        (f"{prefix}-2", "Bo", ["Art"], date(2026, 2, 1), "inactive", None),
        (f"{prefix}-4", "Di", ["History", "Latin"], date(2026, 4, 1), "active", 29),
    ]
    rows = sql(
        "SELECT r.natural_key, r.source_row FROM raw_records r WHERE r.ingestion_id = :i ORDER BY r.source_row",
        i=body["ingestion_id"],
    )
    first = 2 if kind not in THIRD_ROW else 1
    assert [tuple(row) for row in rows] == [
        (f"{prefix}-1", first),
        (f"{prefix}-2", first + 1),
        (f"{prefix}-4", first + 3),
    ]
    (rejection,) = sql(
        "SELECT position, natural_key, errors FROM rejections WHERE ingestion_id = :i", i=body["ingestion_id"]
    )
    assert rejection.position == first + 2 and rejection.natural_key == f"{prefix}-3"
    assert list(rejection.errors) == ["email"]
    lineage = api.get(f"records/tutors/{prefix}-4").json()["lineage"]
    assert lineage["source"] == "upload" and lineage["ingestion_id"] == body["ingestion_id"]
    assert lineage["file"] == {"filename": name, "row": first + 3}


def zip_bomb() -> bytes:
    """A real workbook plus one entry that inflates 1,000-fold (a few hundred MiB)."""
    out = io.BytesIO(as_xlsx([]))
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/media/bomb.bin", b"\0" * (600 * 1024 * 1024))
    return out.getvalue()


def truncated_xlsx() -> bytes:
    data = as_xlsx(tutors("t"))
    return data[: len(data) // 2]


def corrupt_parquet() -> bytes:
    data = bytearray(as_parquet(tutors("p")))
    data[-40:-8] = b"\xff" * 32  # the footer's metadata
    return bytes(data)


REFUSED = {
    "empty": ("tutors.csv", b"", 422, "empty_file"),
    "duplicate column": ("tutors.csv", b"tutor_id,Tutor ID,name\nT1,T1,Ada\n", 422, "duplicate_column"),
    "legacy xls": ("tutors.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600, 415, None),
    "utf-16": ("tutors.csv", "\ufefftutor_id,name\nT1,Ada\n".encode("utf-16-le"), 415, None),
    "truncated xlsx": ("tutors.xlsx", truncated_xlsx(), 422, "unreadable_file"),
    "corrupt parquet": ("tutors.parquet", corrupt_parquet(), 422, "unreadable_file"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_file_that_cannot_be_read_is_refused_whole_and_nothing_is_stored(api, sql, case):
    name, data, status, code = REFUSED[case]
    before = sql("SELECT count(*) FROM uploads")[0][0]
    r = api.upload("tutors", name, data)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["message"] and (code is None or body["error"] == code), body
    assert sql("SELECT count(*) FROM uploads")[0][0] == before


def test_a_zip_bomb_is_refused_from_its_directory(api):
    r = api.upload("tutors", "tutors.xlsx", zip_bomb())
    assert r.status_code == 413, r.text
    assert "zip bomb" in r.json()["message"]


def test_a_file_over_the_limit_is_a_readable_413(api, sql):
    before = sql("SELECT count(*) FROM uploads")[0][0]
    r = api.upload("tutors", "big.csv", b"tutor_id,name\n" + b"T,Ada\n" * (LIMIT // 6 + 10))
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large" and "ETL_MAX_UPLOAD_BYTES" in r.json()["message"]
    assert sql("SELECT count(*) FROM uploads")[0][0] == before


def test_hostile_rows_become_rejections_naming_their_rows(api, sql, unique):
    good = f"{unique}-ok,Ok,ok@example.org,Math,2026-01-01,active\n".encode()
    data = (
        b"tutor_id,name,email,subjects,onboarding_date,status\n"
        + good
        + f"{unique}-ragged,Rag,rag@example.org,Math\n".encode()  # row 3: too few values
        + f"{unique}-latin1,Jos\xe9,jose@example.org,Math,2026-01-01,active\n".encode("latin-1")  # row 4
        + f"{unique}-extra,Ex,ex@example.org,Math,2026-01-01,active,surplus\n".encode()  # row 5
    )
    r = api.upload("tutors", "../../etc/passwd", data, "text/csv")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["upload"]["filename"] == "passwd"
    ingestion = api.wait_settled(body["ingestion_id"])
    assert ingestion["counts"]["persisted"] == 1 and ingestion["counts"]["rejected"] == 3
    refused = sql(
        "SELECT position, errors FROM rejections WHERE ingestion_id = :i ORDER BY position", i=body["ingestion_id"]
    )
    assert [row.position for row in refused] == [3, 4, 5]
    assert "UTF-8" in orjson.dumps(refused[1].errors).decode()
    assert sql("SELECT filename FROM uploads WHERE id = :i", i=body["ingestion_id"])[0][0] == "passwd"


def test_an_unknown_column_rejects_each_row_naming_it(api, sql, unique):
    data = (
        b"tutor_id,name,email,subjects,onboarding_date,status,Favourite Colour\n"
        + f"{unique}-u1,Ada,ada@example.org,Math,2026-01-01,active,blue\n".encode()
    )
    body = api.upload("tutors", "tutors.csv", data).json()
    ingestion = api.wait_settled(body["ingestion_id"])
    assert ingestion["counts"]["rejected"] == 1 and ingestion["counts"]["persisted"] == 0
    (row,) = sql("SELECT errors FROM rejections WHERE ingestion_id = :i", i=body["ingestion_id"])
    assert list(row.errors) == ["favourite_colour"]


def test_excel_dates_and_times_arrive_as_real_timestamps(api, sql, unique):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["tutor_id", "name", "email", "subjects", "onboarding_date", "status", "updated_at"])
    ws.append(
        [f"{unique}-x", "Ada", "ada@example.org", "Math", datetime(2026, 5, 4), "active", datetime(2026, 5, 4, 9, 30)]
    )
    out = io.BytesIO()
    wb.save(out)
    body = api.upload("tutors", "tutors.xlsx", out.getvalue()).json()
    assert api.wait_settled(body["ingestion_id"])["counts"]["persisted"] == 1
    (row,) = sql("SELECT onboarding_date, updated_at FROM tutors WHERE tutor_id = :t", t=f"{unique}-x")
    assert row.onboarding_date == date(2026, 5, 4)
    assert row.updated_at.isoformat() == "2026-05-04T09:30:00+00:00"


def test_an_upload_is_one_openlineage_run_from_start_to_complete_with_its_quality(api, lineage, unique):
    body = api.upload("tutors", "tutors.csv", as_csv(tutors(f"{unique}-ol"))).json()
    run_id = body["ingestion_id"]
    ingestion = api.wait_settled(run_id)

    def both():
        events = [e for e in lineage.events if e["run"]["runId"] == run_id]
        return events if len(events) == 2 else None

    start, complete = sorted(wait_until(both, 30, what="START and COMPLETE"), key=lambda e: e["eventType"] != "START")
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    assert start["job"]["name"] == complete["job"]["name"] == "ingest.tutors"
    assert start["inputs"][0]["name"] == "tutors.csv"
    (output,) = complete["outputs"]
    assert output["name"].endswith(".public.tutors")
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 3
    quality = output["facets"]["etl_app_quality"]
    assert quality["validity"] == ingestion["quality"]["validity"] == 0.75  # 3 of 4 rows
    assert quality["score"] == ingestion["quality"]["score"]
    assert output["facets"]["dataQualityMetrics"]["rowCount"] == 3


def test_the_rejections_download_fixed_in_a_spreadsheet_uploads_again(api, sql, unique):
    data = f'Student ID,Name,Grade Level\n{unique}-1,Ada,9\n{unique}-2,Bo,99\n{unique}-3,"Cy, Jr.",x\n'.encode()
    first = api.upload("students", "students.csv", data).json()["ingestion_id"]
    assert api.wait_settled(first)["counts"]["rejected"] == 2
    r = api.http.get(f"{api.base}/api/v1/ingestions/{first}/rejections?format=csv", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Disposition"] == f"attachment; filename=rejections-{first}.csv"
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["student_id"], row["name"], row["grade_level"], row["_row"]) for row in rows] == [
        (f"{unique}-2", "Bo", "99", "3"),
        (f"{unique}-3", "Cy, Jr.", "x", "4"),
    ]
    assert rows[0]["_raw"] == "" and rows[0]["_errors"].startswith("grade_level: ")

    for row in rows:  # what a user does in the spreadsheet
        row["grade_level"] = "10"
    fixed = io.StringIO()
    writer = csv.DictWriter(fixed, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    second = api.upload("students", "rejections-fixed.csv", fixed.getvalue().encode()).json()["ingestion_id"]
    assert api.wait_settled(second)["counts"] == {
        "received": 2,
        "in_flight": 0,
        "persisted": 2,
        "dead": 0,
        "rejected": 0,
        "rejections_not_stored": 0,
    }
    stored = sql("SELECT student_id, grade_level FROM students WHERE student_id LIKE :p ORDER BY 1", p=f"{unique}-%")
    assert [tuple(row) for row in stored] == [(f"{unique}-1", 9), (f"{unique}-2", 10), (f"{unique}-3", 10)]


def test_a_parse_message_left_on_the_etl_queue_by_an_earlier_version_is_still_read(stack, api, engine, sql, unique):
    """Before the ``uploads`` queue the parse task went to ``etl``: a message still waiting there
    after an upgrade is run by the worker, and the file lands whole."""
    from etl_app import names
    from etl_app.record_types.registry import get_registry
    from etl_app.runtime.celery_app import make_celery
    from etl_app.uploads.store import store_upload

    prefix = f"{unique}-old"
    upload_id, _ = store_upload(
        engine, get_registry()["tutors"], io.BytesIO(as_csv(tutors(prefix))),
        filename="tutors.csv", fmt="csv", note=None, received_at=datetime.now().astimezone(),
    )  # fmt: skip
    celery = make_celery("etl_app", redis_db(15), key_prefix=stack.prefix)
    celery.send_task(names.PARSE_UPLOAD, args=[{"upload_id": str(upload_id)}], queue=names.PIPELINE_QUEUE)
    ingestion = api.wait_settled(str(upload_id))
    assert ingestion["upload"]["status"] == "parsed"
    assert ingestion["counts"]["persisted"] == 3 and ingestion["counts"]["rejected"] == 1
    ids = sql("SELECT tutor_id FROM tutors WHERE tutor_id LIKE :p ORDER BY tutor_id", p=f"{prefix}-%")
    assert [row[0] for row in ids] == [f"{prefix}-1", f"{prefix}-2", f"{prefix}-4"]
