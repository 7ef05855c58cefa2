"""A worker killed in the middle of reading an uploaded file: the parse resumes from its last
committed chunk, and every row of the file ends once, as a stored record or a rejection."""

from __future__ import annotations

import csv
import io

import openpyxl
import pytest
import sqlalchemy as sa

from tests.helpers.faultlib import assert_exactly_once
from tests.helpers.procs import ROOT, wait_until

pytestmark = pytest.mark.slow

ROWS = 3_000
POINT = "etl.upload.parse:chunk4"  # chunks of 100 rows: rows 301-400 written, not committed


def students(prefix: str) -> list[list]:
    """Every 50th row has a grade the schema refuses."""
    return [[f"{prefix}-{i:05d}", f"Student {i}", "x" if i % 50 == 0 else str(1 + i % 12)] for i in range(1, ROWS + 1)]


def as_csv(rows: list[list]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Student ID", "Name", "Grade Level"])
    writer.writerows(rows)
    return out.getvalue().encode()


def as_xlsx(rows: list[list]) -> bytes:
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet()
    ws.append(["Student ID", "Name", "Grade Level"])
    for row in rows:
        ws.append([row[0], row[1], row[2] if row[2] == "x" else int(row[2])])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_a_pool_child_killed_mid_file_resumes_without_losing_or_doubling_a_row(
    make_stack, fault_engine, registry, unique, tmp_path, fmt
):
    kills = tmp_path / "kills"
    kills.mkdir()
    stack = make_stack(PYTHONPATH=str(ROOT), ETL_TEST_KILL=POINT, ETL_TEST_KILL_DIR=str(kills), ETL_CHUNK_SIZE="100")
    api = stack.up(worker_app="tests.helpers.kill_app:celery", beat=False)  # no sweeper: redelivery alone resumes it
    rows = students(unique)
    data = as_csv(rows) if fmt == "csv" else as_xlsx(rows)
    r = api.upload("students", f"students.{fmt}", data)
    assert r.status_code == 202, r.text
    ing = r.json()["ingestion_id"]

    wait_until(lambda: (kills / POINT).exists(), 60, what="a pool child killed mid-file")
    status = api.wait_settled(ing, 180)
    refused_rows = [n + 2 for n, row in enumerate(rows) if row[2] == "x"]  # header is row 1
    assert status["status"] == "finished", status
    assert status["counts"] == {
        "received": ROWS - len(refused_rows),
        "in_flight": 0,
        "persisted": ROWS - len(refused_rows),
        "dead": 0,
        "rejected": len(refused_rows),
        "rejections_not_stored": 0,
    }
    with fault_engine.connect() as conn:
        stored_rows = conn.execute(
            sa.text("SELECT source_row FROM raw_records WHERE ingestion_id = :i ORDER BY source_row"), {"i": ing}
        ).scalars()
        refused = conn.execute(
            sa.text("SELECT position FROM rejections WHERE ingestion_id = :i ORDER BY position"), {"i": ing}
        ).scalars()
        stored_rows, refused = list(stored_rows), list(refused)
        upload = conn.execute(sa.text("SELECT status, rows_read FROM uploads WHERE id = :i"), {"i": ing}).one()
    assert refused == refused_rows
    assert stored_rows == sorted(set(range(2, ROWS + 2)) - set(refused_rows)), "a row lost or stored twice"
    assert tuple(upload) == ("parsed", ROWS)
    o = assert_exactly_once(fault_engine, registry, [ing], compare=("name", "grade_level"))
    assert (o.persisted, o.dead) == (ROWS - len(refused_rows), 0)
    worker_log = stack.procs[0].log()
    assert "SIGKILLs its pool child" in worker_log and "WorkerLostError" in worker_log
