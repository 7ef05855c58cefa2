"""What is stored of rejections is bounded (etl_app.ingest.rejections): a value larger than
ETL_REJECTION_RAW_BYTES is stored cut, with its flag and size; past ETL_MAX_REJECTIONS_STORED an
ingestion's rejections are counted, not stored, by an API batch, by an upload read in chunks and
by chunks stored at the same time. Real PostgreSQL, Flask's test client, no worker."""

from __future__ import annotations

import csv
import io
import threading
import uuid
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa

from etl_app.ingest.rejections import KEY_CHARS, RejectionLimits, store_rejections
from etl_app.record_types import get_registry
from etl_app.uploads import parse

from tests.helpers.parsing import parse_slice_as_the_task
from tests.helpers.payloads import student

AT = datetime(2001, 2, 3, 10, 0, tzinfo=UTC)
HUGE = "x" * (3 * 1024 * 1024)


def _stored(engine, ingestion_id) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT position, natural_key, raw, raw_truncated, raw_size, errors, "
                "octet_length(CAST(raw AS text)) AS raw_bytes, octet_length(CAST(errors AS text)) AS errors_bytes "
                "FROM rejections WHERE ingestion_id = :i ORDER BY position"
            ),
            {"i": ingestion_id},
        ).all()


def _counts(engine, ingestion_id) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT rejected, rejections_stored, rejections_not_stored FROM ingestions WHERE id = :i"),
            {"i": ingestion_id},
        ).one()


def _ingestion(engine) -> uuid.UUID:
    ident = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO ingestions (id, record_type, source) VALUES (:id, 'students', 'batch')"),
            {"id": ident},
        )
    return ident


def test_a_huge_value_is_stored_cut_keeping_its_keys_with_its_flag_and_size(make_app, auth, engine, unique):
    client = make_app(rejection_raw_bytes=4096).test_client()
    batch = [student(f"{unique}-ok"), {"student_id": f"{unique}-1", "name": HUGE, "grade_level": 99, "x": [HUGE]}]
    r = client.post("/api/v1/students/batch", json=batch, headers=auth)
    assert r.status_code == 202 and r.get_json()["rejected"] == 1
    ident = r.get_json()["ingestion_id"]

    (row,) = _stored(engine, ident)
    assert row.raw_truncated and row.raw_size > 2 * len(HUGE)
    assert row.raw_bytes < 2 * 4096  # jsonb's text has spaces orjson's has not
    assert set(row.raw) == {"student_id", "name", "grade_level", "x"}  # still an object with its keys
    assert row.raw["student_id"] == f"{unique}-1" and row.raw["grade_level"] == 99
    assert row.raw["name"].endswith("…") and row.raw["name"].startswith("xxxx")

    (item,) = client.get(f"/api/v1/ingestions/{ident}/rejections", headers=auth).get_json()["rejections"]
    assert (item["raw_truncated"], item["raw_size"], item["raw"]) == (True, row.raw_size, row.raw)
    text = client.get(f"/api/v1/ingestions/{ident}/rejections?format=csv", headers=auth).get_data(as_text=True)
    header, cells = list(csv.reader(io.StringIO(text)))
    assert header[-1] == "_truncated" and cells[-1] == "true" and cells[header.index("name")] == row.raw["name"]


def test_error_messages_and_keys_are_stored_bounded_too(engine):
    ident = _ingestion(engine)
    refused = [
        {"index": 0, "errors": {"name": ["bad: " + HUGE], "grade_level": ["Too big."]}, "raw": {"student_id": HUGE}}
    ]
    with engine.begin() as conn:
        store_rejections(conn, ident, get_registry()["students"], refused, AT, RejectionLimits(raw_bytes=2048))
    (row,) = _stored(engine, ident)
    assert row.errors_bytes < 2 * 2048 and row.errors["grade_level"] == ["Too big."]
    assert row.errors["name"][0].startswith("bad: xxx") and row.errors["name"][0].endswith("…")
    assert len(row.natural_key) <= KEY_CHARS + 1 and row.raw_truncated


def test_a_batch_past_the_allowance_stores_it_and_counts_the_rest(make_app, auth, engine, unique):
    client = make_app(max_rejections_stored=3).test_client()
    batch = [student(f"{unique}-ok")] + [{"student_id": f"{unique}-{i}", "grade_level": 99} for i in range(5)]
    r = client.post("/api/v1/students/batch", json=batch, headers=auth)
    assert r.status_code == 202 and r.get_json()["rejected"] == 5
    ident = r.get_json()["ingestion_id"]

    assert [row.position for row in _stored(engine, ident)] == [1, 2, 3]
    assert _counts(engine, ident) == (5, 3, 2)
    counts = client.get(f"/api/v1/ingestions/{ident}", headers=auth).get_json()["counts"]
    assert (counts["rejected"], counts["rejections_not_stored"]) == (5, 2)
    page = client.get(f"/api/v1/ingestions/{ident}/rejections", headers=auth).get_json()
    assert (len(page["rejections"]), page["not_stored"]) == (3, 2)
    download = client.get(f"/api/v1/ingestions/{ident}/rejections?format=csv", headers=auth)
    assert download.headers["X-Rejections-Not-Stored"] == "2"
    assert len(list(csv.reader(io.StringIO(download.get_data(as_text=True))))) == 1 + 3


def test_an_upload_read_in_chunks_stores_the_allowance_and_counts_the_rest(make_app, auth, engine, unique):
    app = make_app(chunk_size=10, max_rejections_stored=12)
    runtime = app.extensions["etl"]
    rows = "".join(f"{unique}-{i:04d},Student {i},{99 if i % 9 else 5}\n" for i in range(45))
    data = ("student_id,name,grade_level\n" + rows).encode()
    r = app.test_client().post(
        "/api/v1/students/upload", data={"file": (io.BytesIO(data), "s.csv")}, headers=auth,
        content_type="multipart/form-data",
    )  # fmt: skip
    assert r.status_code == 202, r.get_json()
    ident = uuid.UUID(r.get_json()["ingestion_id"])
    outcome = parse_slice_as_the_task(runtime, engine, ident, slice_chunks=10)
    assert outcome == parse.DONE
    refused = 45 - 5  # rows 0, 9, 18, 27 and 36 are valid
    stored = _stored(engine, ident)
    assert len(stored) == 12 and [row.position for row in stored] == sorted(row.position for row in stored)
    assert _counts(engine, ident) == (refused, 12, refused - 12)
    counts = app.test_client().get(f"/api/v1/ingestions/{ident}", headers=auth).get_json()["counts"]
    assert (counts["rejected"], counts["rejections_not_stored"]) == (refused, refused - 12)


def _waiting_on_a_lock(engine, pid: int) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.scalar(sa.text("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :p"), {"p": pid})
        )


def test_chunks_stored_at_once_share_the_allowance(engine):
    """Two transactions storing rejections of one ingestion at the same time: the second waits for
    the first's lock on the ingestion's row, then counts from what the first stored."""
    ident = _ingestion(engine)
    limits = RejectionLimits(max_stored=4)
    record_type = get_registry()["students"]

    def refused(start: int) -> list:
        return [
            {"index": i, "errors": {"name": ["Bad."]}, "raw": {"student_id": f"s{i}"}} for i in range(start, start + 3)
        ]

    second_pid: list[int] = []
    outcome: list = []

    def second() -> None:
        with engine.begin() as conn:
            second_pid.append(conn.scalar(sa.text("SELECT pg_backend_pid()")))
            outcome.append(store_rejections(conn, ident, record_type, refused(10), AT, limits))

    with engine.connect() as first:
        assert store_rejections(first, ident, record_type, refused(0), AT, limits) == 3  # not committed yet
        thread = threading.Thread(target=second)
        thread.start()
        for _ in range(600):  # until the second transaction waits on the ingestion's row
            if second_pid and _waiting_on_a_lock(engine, second_pid[0]):
                break
            threading.Event().wait(0.05)
        assert second_pid and _waiting_on_a_lock(engine, second_pid[0])
        first.commit()
    thread.join(timeout=60)
    assert outcome == [1]
    assert [row.position for row in _stored(engine, ident)] == [0, 1, 2, 10]
    assert _counts(engine, ident)[1:] == (4, 2)


def test_a_small_value_is_stored_as_it_came(engine):
    ident = _ingestion(engine)
    raw = {"student_id": "s1", "name": "Ann", "tags": ["a", "b"], "n": 1.5}
    with engine.begin() as conn:
        store_rejections(conn, ident, get_registry()["students"], [{"index": 0, "errors": {}, "raw": raw}], AT)
    (row,) = _stored(engine, ident)
    assert (row.raw, row.raw_truncated, row.raw_size) == (raw, False, len(orjson.dumps(raw)))
