"""The quality of one ingestion (docs/quality.md), stored when it settles and shown by
GET /api/v1/ingestions/{id}; GET /api/v1/ingestions/{id}/rejections, as JSON pages and as CSV."""

from __future__ import annotations

import csv
import io
import threading
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import orjson
import pytest
import sqlalchemy as sa

from etl_app.ingest import outbox, progress
from etl_app.jsonsafe import json_safe
from etl_app.quality import settle
from etl_app.record_types import get_registry

from tests.helpers.dead_letters import bury, enriched_chunk, store
from tests.helpers.payloads import student

RECEIVED_AT = datetime(2001, 2, 3, 10, 0, tzinfo=UTC)
RANGE = "Must be between 1 and 16."
NOT_INT = "Not a valid integer."
BAD_ID = "Not a valid id."
TRICKY = 'Smith, "Jo"\nline two'


def _status(engine, ids, status):
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE raw_records SET status = :s WHERE id = ANY(:ids)"), {"s": status, "ids": ids})


def _quality_column(engine, ingestion_id):
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT quality FROM ingestions WHERE id = :id"), {"id": ingestion_id}).scalar()


@pytest.fixture
def batch(engine, unique):
    """A JSON batch of students received at RECEIVED_AT: 3 accepted (one key twice), 2 refused."""
    k1, k2 = f"{unique}-1", f"{unique}-2"
    with engine.begin() as conn:
        accepted = outbox.store(
            conn,
            get_registry()["students"],
            [
                {"student_id": k1, "name": "Ann", "grade_level": 5, "event_time": "2001-02-03T09:59:00Z"},  # lag 60
                {"student_id": k2, "name": "Bob", "event_time": "2001-02-03T09:57:00Z"},  # lag 180
                {"student_id": k1, "enrolled_on": "2000-01-01"},  # no event time
            ],
            source="batch",
            received_at=RECEIVED_AT,
            rejections=[
                {
                    "index": 2,
                    "errors": {"student_id": [BAD_ID], "grade_level": [RANGE]},
                    "raw": {"student_id": "bad id!", "grade_level": 99},
                },
                {
                    "index": 4,
                    "errors": {"grade_level": [NOT_INT]},
                    "raw": {"student_id": f"{unique}-9", "name": TRICKY, "grade_level": "seven"},
                },
            ],
        )
    return accepted


BATCH_QUALITY = {
    "received": 5,
    "accepted": 3,
    "rejected": 2,
    "validity": 0.6,
    "completeness": {
        "student_id": 1.0,
        "name": 0.6667,
        "grade_level": 0.3333,
        "enrolled_on": 0.3333,
        "overall": 0.3333,  # the expected fields: (grade_level 1/3 + enrolled_on 1/3) / 2; name is not one
    },
    "uniqueness": 0.6667,  # 2 keys / 3 records
    "integrity": 1.0,  # students have no parents
    "timeliness": {"p50": 120.0, "p95": 174.0, "max": 180.0},  # lags 60 and 180
    "score": 0.65,  # (0.6 + 1/3 + 2/3 + 1) / 4
    "level": "poor",
    "top_errors": [
        {"field": "grade_level", "message": RANGE, "count": 1},
        {"field": "grade_level", "message": NOT_INT, "count": 1},
        {"field": "student_id", "message": BAD_ID, "count": 1},
    ],
    "dropped_fields": {"total": 0, "fields": {}},  # students reject unknown fields and wrong types
    "nulled_values": {"total": 0, "fields": {}},
}


def test_a_batch_is_running_without_quality_until_it_settles_then_finished_with_its_quality(
    client, auth, engine, batch
):
    url = f"/api/v1/ingestions/{batch.ingestion_id}"
    running = client.get(url, headers=auth).get_json()
    assert (running["status"], running["quality"], running["finished_at"]) == ("running", None, None)
    assert running["upload"] is None
    assert settle.settle(engine, [batch.ingestion_id]) == []  # nothing settled yet
    assert _quality_column(engine, batch.ingestion_id) is None

    _status(engine, batch.ids[:2], "persisted")
    assert settle.settle(engine, [batch.ingestion_id]) == []  # one still in flight
    _status(engine, batch.ids[2:], "persisted")
    assert settle.settle(engine, [batch.ingestion_id]) == [batch.ingestion_id]
    assert settle.settle(engine, [batch.ingestion_id]) == []  # stored once

    assert _quality_column(engine, batch.ingestion_id) == BATCH_QUALITY
    body = client.get(url, headers=auth).get_json()
    assert body["status"] == "finished" and body["finished_at"] is not None
    assert body["quality"] == BATCH_QUALITY
    assert body["counts"] == {
        "received": 3, "in_flight": 0, "persisted": 3, "dead": 0, "rejected": 2, "rejections_not_stored": 0,
    }  # fmt: skip


def test_an_ndjson_batch_with_a_bad_line_is_measured_by_hand(client, auth, engine, unique):
    body = "\n".join(
        [
            f'{{"student_id": "{unique}-1", "name": "Ann"}}',
            f'{{"student_id": "{unique}-2", oops',
            f'{{"student_id": "{unique}-3", "grade_level": 0}}',
            f'{{"student_id": "{unique}-4", "grade_level": 3}}',
        ]
    )
    r = client.post("/api/v1/students/batch", data=body, headers={**auth, "Content-Type": "application/x-ndjson"})
    assert r.status_code == 202, r.get_json()
    answer = r.get_json()
    assert (answer["accepted"], answer["rejected"]) == (2, 2)
    (line_error,) = answer["errors"][0]["errors"]["_line"]
    (range_error,) = answer["errors"][1]["errors"]["grade_level"]
    ingestion = uuid.UUID(answer["ingestion_id"])
    with engine.connect() as conn:
        ids = list(
            conn.execute(sa.text("SELECT id FROM raw_records WHERE ingestion_id = :i"), {"i": ingestion}).scalars()
        )
    _status(engine, ids, "persisted")
    assert settle.settle(engine, raw_ids=ids) == [ingestion]  # found by its records
    quality = client.get(f"/api/v1/ingestions/{ingestion}", headers=auth).get_json()["quality"]
    assert quality == {
        "received": 4,
        "accepted": 2,
        "rejected": 2,
        "validity": 0.5,
        "completeness": {"student_id": 1.0, "name": 0.5, "grade_level": 0.5, "enrolled_on": 0.0, "overall": 0.25},
        "uniqueness": 1.0,
        "integrity": 1.0,
        "timeliness": None,  # no record has an event time
        "score": 0.6875,  # (0.5 + 0.25 + 1 + 1) / 4
        "level": "poor",
        "top_errors": sorted(
            [
                {"field": "_line", "message": line_error, "count": 1},
                {"field": "grade_level", "message": range_error, "count": 1},
            ],
            key=lambda e: (e["field"], e["message"]),
        ),
        "dropped_fields": {"total": 0, "fields": {}},
        "nulled_values": {"total": 0, "fields": {}},
    }
    csv_text = client.get(f"/api/v1/ingestions/{ingestion}/rejections?format=csv", headers=auth).get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(csv_text)))
    assert rows[1] == ["", "", "", "", "", f'{{"student_id": "{unique}-2", oops', "1", f"_line: {line_error}", ""]
    assert rows[2] == ["", f"{unique}-3", "", "0", "", "", "2", f"grade_level: {range_error}", ""]


def test_the_ingestion_a_persist_task_settles_gets_its_quality_at_once(make_app, engine, unique):
    app = make_app()
    accepted = store(engine, "students", [student(unique)])
    chunk = enriched_chunk(engine, "students", accepted.ids, stash=app.extensions["etl"].stash)
    assert _quality_column(engine, accepted.ingestion_id) is None
    assert app.extensions["celery"].tasks["etl.persist"].apply(args=(chunk,)).get() == 1
    quality = _quality_column(engine, accepted.ingestion_id)  # no GET in between: the task stored it
    assert (quality["received"], quality["validity"], quality["level"]) == (1, 1.0, "good")  # (1 + 1/2 + 1 + 1) / 4


def test_the_dead_letter_task_settles_an_ingestion_whose_last_record_dies(make_app, engine, unique):
    app = make_app()
    accepted = store(engine, "students", [student(unique), student(f"{unique}-b")])
    _status(engine, accepted.ids[:1], "persisted")
    failure = {"id": accepted.ids[1], "error_type": "validation", "error": "name: Bad.", "traceback": None}
    app.extensions["celery"].tasks["etl.dead_letter.record"].apply(args=("students", [failure], "etl.validate")).get()
    quality = _quality_column(engine, accepted.ingestion_id)
    assert quality["accepted"] == 2 and quality["top_errors"] == [{"field": "name", "message": "Bad.", "count": 1}]


def test_top_errors_keep_a_message_holding_a_semicolon_whole_and_count_a_part_without_a_field(make_app, engine, unique):
    app = make_app()
    accepted = store(engine, "students", [student(f"{unique}-{i}") for i in range(3)])
    errors = ["name: one of: a; b; or c; grade_level: Bad.", "name: one of: a; b; or c", "no field here"]
    failures = [
        {"id": raw_id, "error_type": "validation", "error": error, "traceback": None}
        for raw_id, error in zip(accepted.ids, errors, strict=True)
    ]
    app.extensions["celery"].tasks["etl.dead_letter.record"].apply(args=("students", failures, "etl.validate")).get()
    quality = _quality_column(engine, accepted.ingestion_id)
    assert quality["top_errors"] == [
        {"field": "name", "message": "one of: a; b; or c", "count": 2},
        {"field": "_schema", "message": "no field here", "count": 1},
        {"field": "grade_level", "message": "Bad.", "count": 1},
    ]


def test_a_failing_settle_never_fails_the_task(make_app, engine, unique, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("measuring broke")

    monkeypatch.setattr(settle, "_store", broken)
    app = make_app()
    accepted = store(engine, "students", [student(unique)])
    chunk = enriched_chunk(engine, "students", accepted.ids, stash=app.extensions["etl"].stash)
    assert app.extensions["celery"].tasks["etl.persist"].apply(args=(chunk,)).get() == 1
    assert _quality_column(engine, accepted.ingestion_id) is None
    assert "could not settle" in caplog.text
    monkeypatch.undo()
    with engine.connect() as conn:  # the sweeper's catch-up measures it (other tests' ones may come first)
        while settle.catch_up(conn, get_registry(), limit=500) and not _quality_column(engine, accepted.ingestion_id):
            pass
    assert _quality_column(engine, accepted.ingestion_id)["accepted"] == 1


def test_a_replay_reopens_a_settled_ingestion_and_it_is_measured_again(client, auth, engine, unique):
    from tests.quality.test_daily_quality import sess

    t = f"{unique}-T"
    accepted = store(engine, "sessions", [sess(f"{unique}-S", "2026-01-01T09:00:00Z", tutor_id=t)])
    [dl_id] = bury(engine, accepted.ids, error_type="missing_parent", error=f"parent tutors:{t} is not stored")
    url = f"/api/v1/ingestions/{accepted.ingestion_id}"
    settle.settle(engine, [accepted.ingestion_id])
    before = client.get(url, headers=auth).get_json()
    assert before["status"] == "finished" and before["quality"]["integrity"] == 0.0

    assert client.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=auth).status_code == 202
    reopened = client.get(url, headers=auth).get_json()
    assert (reopened["status"], reopened["quality"], reopened["finished_at"]) == ("running", None, None)
    assert _quality_column(engine, accepted.ingestion_id) is None

    _status(engine, accepted.ids, "persisted")  # the replayed record lands
    assert settle.settle(engine, [accepted.ingestion_id]) == [accepted.ingestion_id]
    after = client.get(url, headers=auth).get_json()
    assert after["status"] == "finished" and after["quality"]["integrity"] == 1.0


def test_two_concurrent_settles_store_one_report_and_announce_it_once(engine, unique, monkeypatch):
    announced = []
    monkeypatch.setattr(settle, "_on_settled", lambda settings, report: announced.append(report["id"]))
    accepted = store(engine, "students", [student(unique), student(f"{unique}-b")])
    _status(engine, accepted.ids, "persisted")
    start = threading.Barrier(2)
    results: list[list] = []

    def one():
        start.wait()
        results.append(settle.settle(engine, [accepted.ingestion_id], settings=LINEAGE_ON))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [[], [accepted.ingestion_id]]
    assert announced == [accepted.ingestion_id]
    assert _quality_column(engine, accepted.ingestion_id)["received"] == 2


LINEAGE_ON = SimpleNamespace(openlineage_url="http://lineage.invalid")  # _on_settled is replaced in these tests
LINEAGE_OFF = SimpleNamespace(openlineage_url=None)


def _settled_ingestions(engine, unique, n):
    ids = []
    for i in range(n):
        accepted = store(engine, "students", [student(f"{unique}-{i}")])
        _status(engine, accepted.ids, "persisted")
        ids.append(accepted.ingestion_id)
    return ids


def _statements_to_settle(engine, ids, settings):
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        assert sorted(settle.settle(engine, ids, settings=settings)) == sorted(ids)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return len(statements)


@pytest.mark.parametrize("lineage", [LINEAGE_OFF, LINEAGE_ON], ids=["lineage off", "lineage on"])
def test_settling_many_ingestions_takes_as_many_statements_as_settling_one(engine, unique, monkeypatch, lineage):
    """Single records settle an ingestion each: nothing is read back per ingestion to announce it
    (with no lineage server, nothing at all; with one, all of them together)."""
    announced = []
    monkeypatch.setattr(settle, "_on_settled", lambda settings, report: announced.append(report))
    one = _statements_to_settle(engine, _settled_ingestions(engine, f"{unique}-a", 1), lineage)
    five = _settled_ingestions(engine, f"{unique}-b", 5)
    assert _statements_to_settle(engine, five, lineage) == one
    if lineage is LINEAGE_OFF:
        assert announced == []
    else:
        assert sorted(r["id"] for r in announced[1:]) == sorted(five)
        with engine.connect() as conn:  # what is announced is what GET /api/v1/ingestions/{id} shows
            assert announced[1:] == [progress.read_status(conn, r["id"])[0] for r in announced[1:]]
        assert {(r["status"], r["counts"]["persisted"], r["quality"]["received"]) for r in announced} == {
            ("finished", 1, 1)
        }


def test_reading_many_ingestions_reads_each_as_one_would(engine, batch, unique):
    other = store(engine, "students", [student(unique)]).ingestion_id
    missing = uuid.uuid4()
    with engine.connect() as conn:
        many = progress.read_statuses(conn, [batch.ingestion_id, other, missing])
        assert set(many) == {batch.ingestion_id, other}
        for ident in (batch.ingestion_id, other):
            assert many[ident] == progress.read_status(conn, ident)[0]
        assert progress.read_status(conn, missing) == (None, False)
    assert many[batch.ingestion_id]["counts"] == {
        "received": 3, "in_flight": 3, "persisted": 0, "dead": 0, "rejected": 2, "rejections_not_stored": 0
    }  # fmt: skip


@pytest.mark.parametrize("message", ["Bad.", "NUL \x00 inside", "a lone \ud800 surrogate", "a \\u0000 as text"])
def test_a_report_is_stored_as_json_safe_makes_it(message):
    report = {**settle.empty_report(), "top_errors": [{"field": "name", "message": message, "count": 1}]}
    assert settle.stored_form(report) == orjson.dumps(json_safe(report)).decode()
    assert "\x00" not in orjson.loads(settle.stored_form(report))["top_errors"][0]["message"]


# -- uploads ------------------------------------------------------------------------------------


def _upload(engine, ingestion_id, status, error=None, rows_read=0):
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO uploads (id, record_type, filename, format, size, sha256, chunk_bytes, status, "
                "rows_read, progress, error) VALUES (:id, 'students', 'kids.csv', 'csv', 120, 'x', 1024, :status, "
                ":rows, :progress, :error)"
            ),
            {"id": ingestion_id, "status": status, "rows": rows_read, "progress": 0.5, "error": error},
        )


def test_an_upload_runs_while_parsing_and_a_failed_one_is_failed_with_its_error_and_quality(
    client, auth, engine, unique
):
    accepted = store(engine, "students", [student(unique), student(f"{unique}-b")])
    _status(engine, accepted.ids[:1], "persisted")
    _status(engine, accepted.ids[1:], "rejected")  # a row the parser refused
    _upload(engine, accepted.ingestion_id, "parsing", rows_read=2)
    url = f"/api/v1/ingestions/{accepted.ingestion_id}"
    parsing = client.get(url, headers=auth).get_json()
    assert (parsing["status"], parsing["quality"]) == ("running", None)  # nothing in flight, still parsing
    assert settle.settle(engine, [accepted.ingestion_id]) == []

    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE uploads SET status = 'failed', error = 'row 3: not a CSV row' WHERE id = :id"),
            {"id": accepted.ingestion_id},
        )
    failed = client.get(url, headers=auth).get_json()
    assert failed["status"] == "failed"
    assert failed["upload"] == {
        "filename": "kids.csv",
        "format": "csv",
        "note": None,
        "size": 120,
        "status": "failed",
        "rows_read": 2,
        "progress": 0.5,
        "error": "row 3: not a CSV row",
    }
    q = failed["quality"]
    assert (q["received"], q["accepted"], q["rejected"], q["validity"]) == (2, 1, 1, 0.5)


def test_an_upload_that_failed_before_any_row_is_failed_and_unusable(client, auth, engine):
    ingestion_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO ingestions (id, record_type, source) VALUES (:id, 'students', 'upload')"),
            {"id": ingestion_id},
        )
    _upload(engine, ingestion_id, "failed", error="not a spreadsheet")
    body = client.get(f"/api/v1/ingestions/{ingestion_id}", headers=auth).get_json()
    assert body["status"] == "failed" and body["upload"]["error"] == "not a spreadsheet"
    assert (body["quality"]["received"], body["quality"]["validity"], body["quality"]["level"]) == (0, 0.0, "unusable")


# -- GET /api/v1/ingestions/{id}/rejections ------------------------------------------------------


def test_rejections_are_listed_in_input_order_a_page_at_a_time(client, auth, batch, unique):
    url = f"/api/v1/ingestions/{batch.ingestion_id}/rejections"
    first = client.get(f"{url}?limit=1", headers=auth).get_json()
    (item,) = first["rejections"]
    assert {k: v for k, v in item.items() if k != "created_at"} == {
        "index": 2,
        "row": None,
        "natural_key": "bad id!",
        "raw": {"student_id": "bad id!", "grade_level": 99},
        "raw_truncated": False,
        "raw_size": None,
        "errors": {"student_id": [BAD_ID], "grade_level": [RANGE]},
    }
    assert item["created_at"].startswith("2001-02-03T10:00:00")
    assert (first["next"], first["limit"]) == (3, 1)
    second = client.get(f"{url}?limit=1&cursor={first['next']}", headers=auth).get_json()
    assert [i["index"] for i in second["rejections"]] == [4] and second["next"] is None
    whole = client.get(url, headers=auth).get_json()
    assert [i["index"] for i in whole["rejections"]] == [2, 4] and whole["next"] is None


def test_an_upload_names_its_rejections_by_row(client, auth, engine):
    ingestion_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO ingestions (id, record_type, source) VALUES (:id, 'students', 'upload')"),
            {"id": ingestion_id},
        )
        conn.execute(
            sa.text(
                "INSERT INTO rejections (ingestion_id, record_type, position, raw, errors) "
                'VALUES (:id, \'students\', 7, \'{"student_id": ""}\', \'{"student_id": ["Missing."]}\')'
            ),
            {"id": ingestion_id},
        )
    _upload(engine, ingestion_id, "parsed")
    (item,) = client.get(f"/api/v1/ingestions/{ingestion_id}/rejections", headers=auth).get_json()["rejections"]
    assert (item["index"], item["row"]) == (None, 7)


def test_rejections_download_as_a_csv_to_fix_and_upload_again(client, auth, batch, unique):
    r = client.get(f"/api/v1/ingestions/{batch.ingestion_id}/rejections?format=csv", headers=auth)
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"] == f"attachment; filename=rejections-{batch.ingestion_id}.csv"
    assert r.get_data(as_text=True) == (  # every cell quoted
        '"event_time","student_id","name","grade_level","enrolled_on","_raw","_row","_errors","_truncated"\r\n'
        f'"","bad id!","","99","","","2","student_id: {BAD_ID}; grade_level: {RANGE}",""\r\n'
        f'"","{unique}-9","Smith, ""Jo""\nline two","seven","","","4","grade_level: {NOT_INT}",""\r\n'
    )
    rows = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert rows[2][2] == TRICKY  # a spreadsheet reads the value back as it was


def test_csv_cells_join_lists_and_keep_what_fits_no_column(engine, unique):
    from etl_app.web.rejections import csv_row

    fields = ["tutor_id", "subjects", "active"]
    assert csv_row(fields, 3, {"tutor_id": "T", "subjects": ["Math", "Art"], "active": True}, {"a": ["b"]}) == [
        "T", "Math;Art", "true", "", "3", "a: b", "",
    ]  # fmt: skip
    # _raw: only what fits no column (tutor_id is in its own)
    assert csv_row(fields, 4, {"tutor_id": "T", "extra": {"x": 1}}, {}) == [
        "T", "", "", '{"extra":{"x":1}}', "4", "", "",
    ]  # fmt: skip
    assert csv_row(fields, 5, [1, 2], {"_schema": ["Invalid input type."]}) == [
        "", "", "", "[1,2]", "5", "_schema: Invalid input type.", "",
    ]  # fmt: skip


def test_rejections_of_an_unknown_ingestion_are_404_and_bad_parameters_400(client, auth, batch):
    assert client.get(f"/api/v1/ingestions/{uuid.uuid4()}/rejections", headers=auth).status_code == 404
    assert client.get("/api/v1/ingestions/nope/rejections", headers=auth).status_code == 404
    url = f"/api/v1/ingestions/{batch.ingestion_id}/rejections"
    for query in (
        "format=xml",
        "limit=0",
        "limit=501",
        "cursor=0",
        "cursor=x",
        "page=2",
        "limit=",
    ):
        r = client.get(f"{url}?{query}", headers=auth)
        assert (r.status_code, r.get_json()["error"]) == (400, "invalid_parameter"), query
    assert client.get(url).status_code == 401


def test_a_csv_may_be_one_page_of_the_rejections(client, auth, batch):
    url = f"/api/v1/ingestions/{batch.ingestion_id}/rejections?format=csv"
    every = list(csv.reader(io.StringIO(client.get(url, headers=auth).get_data(as_text=True))))
    page = list(csv.reader(io.StringIO(client.get(f"{url}&cursor=3&limit=1", headers=auth).get_data(as_text=True))))
    assert [row[-3] for row in every[1:]] == ["2", "4"]
    assert page == [every[0], every[2]]


def test_a_reader_may_list_rejections_and_an_ingest_key_may_not(make_app, batch):
    app = make_app(api_keys=("reader-key:reader", "ingest-key:ingest"))
    client = app.test_client()
    url = f"/api/v1/ingestions/{batch.ingestion_id}/rejections"
    assert client.get(url, headers={"Authorization": "Bearer reader-key"}).status_code == 200
    assert client.get(url, headers={"Authorization": "Bearer ingest-key"}).status_code == 403


def test_a_large_csv_streams_every_rejection_in_order(client, auth, engine):
    refused = [
        {"index": i, "errors": {"name": ["Too long."]}, "raw": {"student_id": f"S{i}", "name": "x" * 50}}
        for i in range(2500)
    ]
    with engine.begin() as conn:
        accepted = outbox.store(
            conn, get_registry()["students"], [], source="batch", received_at=RECEIVED_AT, rejections=refused
        )
    r = client.get(f"/api/v1/ingestions/{accepted.ingestion_id}/rejections?format=csv", headers=auth)
    assert r.is_streamed
    rows = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert len(rows) == 2501 and [row[6] for row in rows[1:]] == [str(i) for i in range(2500)]
    assert rows[-1] == ["", "S2499", "x" * 50, "", "", "", "2499", "name: Too long.", ""]


def test_reading_a_settled_unmeasured_ingestion_shows_it_finished_and_writes_nothing(client, auth, engine, batch):
    """A GET never commits: an ingestion that has settled before any worker stored its quality
    is shown finished, measured as it will be stored; the sweeper's catch-up stores the same."""
    _status(engine, batch.ids, "persisted")  # settled behind the workers' back: nothing stored
    url = f"/api/v1/ingestions/{batch.ingestion_id}"
    shown = client.get(url, headers=auth).get_json()
    assert (shown["status"], shown["quality"]) == ("finished", BATCH_QUALITY)
    assert shown["finished_at"] is not None
    assert _quality_column(engine, batch.ingestion_id) is None  # the read wrote nothing
    assert client.get(url, headers=auth).get_json() == shown

    with engine.connect() as conn:
        assert batch.ingestion_id in settle.catch_up(conn, get_registry())
    assert _quality_column(engine, batch.ingestion_id) == BATCH_QUALITY
    stored = client.get(url, headers=auth).get_json()
    assert stored == shown


def test_an_ingestion_being_measured_is_measured_once_and_a_reader_waits_for_its_report(
    client, auth, engine, batch, monkeypatch
):
    """While one settler measures an ingestion (a large upload takes a second or more), another
    settler skips it and a GET waits for the stored report instead of measuring it again."""
    measured = []
    measure = settle._measure
    monkeypatch.setattr(settle, "_measure", lambda *a, **k: measured.append(a[3]) or measure(*a, **k))
    _status(engine, batch.ids, "persisted")
    ident = batch.ingestion_id
    with engine.connect() as first:
        candidates = first.execute(settle._BY_INGESTION, {"ids": [ident]}).all()  # the first settler's lock
        assert [c[0] for c in candidates] == [ident]
        with engine.connect() as second:
            assert settle.settle_on(second, get_registry(), [ident]) == []  # skipped, not measured
        shown = {}
        reader = threading.Thread(
            target=lambda: shown.update(client.get(f"/api/v1/ingestions/{ident}", headers=auth).get_json())
        )
        reader.start()
        reader.join(0.5)
        assert reader.is_alive()  # waiting for the first settler's report
        assert settle._store(first, get_registry(), candidates) == [ident]
        first.commit()
        reader.join(10)
    assert (shown["status"], shown["quality"]) == ("finished", BATCH_QUALITY)
    assert _quality_column(engine, ident) == BATCH_QUALITY
    assert measured == [[ident]]  # by the first settler only


def test_a_reader_waits_for_a_settler_only_so_long_then_measures_the_ingestion_itself(
    client, auth, engine, batch, monkeypatch
):
    monkeypatch.setattr(settle, "SETTLER_WAIT_MS", 200)
    _status(engine, batch.ids, "persisted")
    ident = batch.ingestion_id
    with engine.connect() as first:
        assert first.execute(settle._BY_INGESTION, {"ids": [ident]}).all()  # a settler that takes long
        shown = client.get(f"/api/v1/ingestions/{ident}", headers=auth).get_json()
        assert (shown["status"], shown["quality"]) == ("finished", BATCH_QUALITY)
        assert _quality_column(engine, ident) is None  # the reader wrote nothing
        first.rollback()


def test_a_large_running_ingestion_is_counted_again_only_after_a_while_and_settling_shows_at_once(
    client, auth, engine, batch, monkeypatch
):
    """Polling a large upload does not count all its records each time: a running ingestion's
    counts are kept a moment (here its 3 records stand for many); its settling shows at once."""
    monkeypatch.setattr(progress, "COUNTS_KEPT_FROM", 3)
    monkeypatch.setattr(progress, "RECORDS_PER_SECOND_KEPT", 1)  # 3 records: kept MAX_KEPT_SECONDS
    url = f"/api/v1/ingestions/{batch.ingestion_id}"
    first = client.get(url, headers=auth).get_json()
    assert (first["status"], first["counts"]["in_flight"], first["counts"]["persisted"]) == ("running", 3, 0)
    _status(engine, batch.ids[:1], "persisted")
    assert client.get(url, headers=auth).get_json()["counts"] == first["counts"]  # kept
    _status(engine, batch.ids, "persisted")
    with engine.connect() as conn:
        assert settle.settle_on(conn, get_registry(), [batch.ingestion_id]) == [batch.ingestion_id]
    settled = client.get(url, headers=auth).get_json()  # its row says it settled: counted afresh
    assert (settled["status"], settled["counts"]["in_flight"], settled["counts"]["persisted"]) == ("finished", 0, 3)


def test_a_field_counts_as_given_when_it_holds_a_character_other_than_white_space(engine, unique):
    """Whatever its first character (ASCII, a space, a tab, a no-break or ideographic space, a
    letter beyond ASCII), a value counts as given exactly when PostgreSQL's ``\\S`` finds a
    character in it, as in the definition (docs/quality.md)."""
    names = [
        "Ann",
        " Ann",
        "\tAnn",
        "   ",
        "\t\n",
        "",
        "\u00a0",
        "\u00a0Ann",
        "\u3000",
        "\u3000Ann",
        "Émile",
        "!",
        "~",
        "\x7f",
    ]
    with engine.begin() as conn:
        accepted = outbox.store(
            conn,
            get_registry()["students"],
            [{"student_id": f"{unique}-{n}", "name": name} for n, name in enumerate(names)],
            source="batch",
            received_at=RECEIVED_AT,
            rejections=[],
        )
        given = conn.execute(sa.text("SELECT count(*) FROM unnest(CAST(:v AS text[])) AS v WHERE v ~ '\\S'"),
                             {"v": names}).scalar()  # fmt: skip
        measured = settle._measure(conn, get_registry(), "students", [accepted.ingestion_id])[accepted.ingestion_id]
    assert 0 < given < len(names)
    assert measured["completeness"]["name"] == round(given / len(names), 4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2001-02-03T09:59:00Z", datetime(2001, 2, 3, 9, 59, tzinfo=UTC)),
        ("2001-02-03T09:59:00+01:00", datetime(2001, 2, 3, 8, 59, tzinfo=UTC)),
        ("2001-02-03T09:59:00-08:30", datetime(2001, 2, 3, 18, 29, tzinfo=UTC)),
        ("2001-02-03 09:59:00z", datetime(2001, 2, 3, 9, 59, tzinfo=UTC)),
        ("2001-02-03t09:59+0100", datetime(2001, 2, 3, 8, 59, tzinfo=UTC)),
        ("2001-02-03T09:59:00.25Z", datetime(2001, 2, 3, 9, 59, 0, 250000, tzinfo=UTC)),
        ("2001-02-03T09:59:00", datetime(2001, 2, 3, 9, 59, tzinfo=UTC)),  # naive: UTC
        ("2001-02-03T09:59:00+01", datetime(2001, 2, 3, 8, 59, tzinfo=UTC)),
        ("2001-02-03T09:59:00.123Z", datetime(2001, 2, 3, 9, 59, 0, 123000, tzinfo=UTC)),
        ("2001-02-03T09:59:00.123456-02:00", datetime(2001, 2, 3, 11, 59, 0, 123456, tzinfo=UTC)),
        ("2001-02-03T09:59:00.5", datetime(2001, 2, 3, 9, 59, 0, 500000, tzinfo=UTC)),  # naive: UTC
        (" 2001-02-03T09:59:00Z\n", datetime(2001, 2, 3, 9, 59, tzinfo=UTC)),  # white space around: trimmed
        ("2001-02-03T09:59:00-0800", datetime(2001, 2, 3, 17, 59, tzinfo=UTC)),
        ("2001-02-03T09:59Z", datetime(2001, 2, 3, 9, 59, tzinfo=UTC)),
        ("2001-02-03T09:59:00+15:59", datetime(2001, 2, 2, 18, 0, tzinfo=UTC)),
        ("2001-02-03T09:59:00.123-15:59", datetime(2001, 2, 4, 1, 58, 0, 123000, tzinfo=UTC)),
        # offsets PostgreSQL refuses, which the schemas once let through: null, never an error
        ("2001-02-03T09:59:00+20:00", None),
        ("2001-02-03T09:59:00.123456-16:00", None),
        ("2001-02-03T09:59:00+10:60", None),
        ("2001-02-03T09:59:00+2000", None),
        ("2001-2-03T09:59:00Z", None),
        ("2001-02-03T09:59:0aZ", None),
        ("2001-02-03T09:59:00+01:00:00", None),
        ("2001-02-03", None),
        ("2001-02-03T09:59:00 +01:00", None),
        ("2001-02-03X09:59:00+01:00", None),
        ("", None),
        (None, None),
    ],
)
def test_an_event_time_is_read_as_the_schema_reads_it_whatever_its_shape(engine, text, expected):
    """The usual shapes are cast without the regular expressions; every other one goes through
    them: the same instant either way, and null for what is no timestamp."""
    from etl_app.quality import _timestamp

    with engine.connect() as conn:
        conn.execute(sa.text("SET LOCAL timezone = 'America/Los_Angeles'"))  # naive is UTC whatever the session's
        assert conn.execute(sa.text(f"SELECT {_timestamp('CAST(:t AS text)')}"), {"t": text}).scalar() == expected


def test_the_measure_gives_the_same_report_once_its_statement_is_prepared(engine, batch):
    """The driver prepares a statement run five times on a connection, and measuring asks for a
    generic plan (etl_app.quality.settle): every run reports the same numbers."""
    _status(engine, batch.ids, "persisted")
    registry = get_registry()
    with engine.connect() as conn:
        reports = []
        for _ in range(8):
            reports.append(settle._measure(conn, registry, "students", [batch.ingestion_id])[batch.ingestion_id])
            conn.commit()  # a rollback would make the driver forget the prepared statement
    assert orjson.loads(settle.stored_form(reports[0])) == BATCH_QUALITY
    assert all(report == reports[0] for report in reports)
