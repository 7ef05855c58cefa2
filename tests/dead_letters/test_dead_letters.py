"""Dead letters through the API and the domain functions, on the real database (no worker)."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from etl_app.clock import utcnow
from etl_app.dead_letters import actions
from etl_app.dead_letters.errors import InvalidParameter
from etl_app.dead_letters.filters import parse_filters
from etl_app.pipeline.persist import persist_chunk
from etl_app.record_types import get_registry
from tasks.pipeline import persist

from tests.helpers.dead_letters import bury, dead, dead_letter_row, enriched_chunk, land, raw_row, store
from tests.helpers.payloads import feedback, session, student, tutor
from tests.helpers.support import queue_length

TRACEBACK = "\n".join(f"line {i}" for i in range(30))


def listed(client, auth, **params):
    r = client.get("/api/v1/dead-letters", query_string=params, headers=auth)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


# -- listing and showing --------------------------------------------------------------------------


def test_list_filters_by_record_type_error_type_ingestion_since_and_status(client, auth, engine, unique):
    students, s_ids = dead(engine, "students", [student(f"{unique}-1"), student(f"{unique}-2")])
    tutors, t_ids = dead(engine, "tutors", [tutor(f"{unique}-T")], error_type="enrichment", error="lookup failed")

    body = listed(client, auth, ingestion_id=str(students.ingestion_id))
    assert [d["id"] for d in body["dead_letters"]] == sorted(s_ids, reverse=True)  # newest first
    first = body["dead_letters"][0]
    assert first["record_type"] == "students" and first["error_type"] == "validation"
    assert first["status"] == "open" and first["record_status"] == "dead" and first["replay_count"] == 0
    assert "payload" not in first and "traceback" not in first
    assert body["next"] is None and body["limit"] == 50

    assert listed(client, auth, ingestion_id=str(tutors.ingestion_id), error_type="validation")["dead_letters"] == []
    only = listed(client, auth, ingestion_id=str(tutors.ingestion_id), error_type="enrichment", record_type="tutors")
    assert [d["id"] for d in only["dead_letters"]] == t_ids
    assert listed(client, auth, ingestion_id=str(tutors.ingestion_id), record_type="students")["dead_letters"] == []

    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert listed(client, auth, ingestion_id=str(students.ingestion_id), since=future)["dead_letters"] == []
    past = (utcnow() - timedelta(hours=1)).replace(tzinfo=None).isoformat()  # naive: UTC
    assert len(listed(client, auth, ingestion_id=str(students.ingestion_id), since=past)["dead_letters"]) == 2

    with engine.begin() as conn:
        actions.discard(conn, s_ids[0])
    assert [d["id"] for d in listed(client, auth, ingestion_id=str(students.ingestion_id))["dead_letters"]] == [
        s_ids[1]
    ]
    discarded = listed(client, auth, ingestion_id=str(students.ingestion_id), status="discarded")
    assert [d["id"] for d in discarded["dead_letters"]] == [s_ids[0]]
    assert len(listed(client, auth, ingestion_id=str(students.ingestion_id), status="all")["dead_letters"]) == 2


def test_list_pages_with_a_cursor(client, auth, engine, unique):
    accepted, ids = dead(engine, "students", [student(f"{unique}-{i}") for i in range(5)])
    seen, cursor, pages = [], None, 0
    while True:
        params = {"ingestion_id": str(accepted.ingestion_id), "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = listed(client, auth, **params)
        seen += [d["id"] for d in body["dead_letters"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert pages == 3 and seen == sorted(ids, reverse=True)


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"record_type": "teachers"}, "record_type"),
        ({"error_type": "oops"}, "error_type"),
        ({"ingestion_id": "not-a-uuid"}, "ingestion_id"),
        ({"since": "yesterday"}, "since"),
        ({"status": "closed"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "abc"}, "cursor"),
        ({"recordtype": "students"}, "recordtype"),
    ],
)
def test_bad_list_parameters_are_400_naming_the_parameter(client, auth, params, parameter):
    r = client.get("/api/v1/dead-letters", query_string=params, headers=auth)
    assert r.status_code == 400
    body = r.get_json()
    assert body["error"] == "invalid_parameter" and body["parameter"] == parameter
    assert body["message"].startswith(parameter)


def test_show_has_payload_error_traceback_summary_and_record_status(client, auth, engine, unique):
    _, [dl_id] = dead(engine, "students", [student(unique)], error="grade: bad", traceback=TRACEBACK)
    r = client.get(f"/api/v1/dead-letters/{dl_id}", headers=auth)
    assert r.status_code == 200
    body = r.get_json()
    assert body["payload"] == student(unique)
    assert body["error"] == "grade: bad" and body["error_type"] == "validation"
    assert body["traceback"].splitlines() == [f"line {i}" for i in range(10, 30)]
    assert body["traceback_truncated"] is True
    assert body["task_name"] == "etl.validate" and body["attempts"] == 0 and body["replay_count"] == 0
    assert body["record_status"] == "dead" and body["natural_key"] == unique
    assert body["first_failed_at"] and body["last_failed_at"] and body["last_replayed_at"] is None


@pytest.mark.parametrize("path", ["999999999999", "9999999999999999999999", "abc"])
def test_unknown_dead_letter_is_404(client, auth, path):
    for method, url in [
        ("get", f"/api/v1/dead-letters/{path}"),
        ("post", f"/api/v1/dead-letters/{path}/replay"),
        ("post", f"/api/v1/dead-letters/{path}/discard"),
        ("delete", f"/api/v1/dead-letters/{path}"),
    ]:
        r = getattr(client, method)(url, headers=auth)
        assert r.status_code == 404, (method, url)
        assert r.get_json()["error"] == "not_found"


def test_dead_letters_need_the_api_key(client):
    assert client.get("/api/v1/dead-letters").status_code == 401
    assert client.post("/api/v1/dead-letters/replay", json={}).status_code == 401


# -- replaying one --------------------------------------------------------------------------------


def test_replay_puts_the_record_back_and_queues_a_chain(client, auth, engine, unique, api_redis_url, broker_prefix):
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    r = client.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=auth)
    assert r.status_code == 202
    assert r.get_json() == {"replayed": 1, "dead_letter_id": dl_id, "raw_record_id": accepted.ids[0]}
    raw = raw_row(engine, accepted.ids[0])
    assert raw.status == "received" and raw.enqueued_at is not None and raw.waiting_on is None
    dl = dead_letter_row(engine, dl_id)
    assert (dl.status, dl.replay_count, dl.last_outcome) == ("replayed", 1, "replayed")
    assert dl.last_replayed_at is not None
    assert queue_length(api_redis_url, broker_prefix) == 1
    assert client.get(f"/api/v1/dead-letters/{dl_id}", headers=auth).get_json()["record_status"] == "received"

    again = client.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=auth)
    assert again.status_code == 409
    assert again.get_json()["error"] == "not_open" and again.get_json()["current_status"] == "replayed"


def test_replay_with_a_corrected_payload_replaces_it(client, auth, engine, unique):
    wrong = feedback(f"{unique}-F", f"{unique}-S", f"{unique}-OTHER", f"{unique}-ST")
    accepted, [dl_id] = dead(engine, "feedback", [wrong], error_type="parent_mismatch", task_name="etl.enrich")
    fixed = {**wrong, "tutor_id": f"{unique}-T"}
    r = client.post(f"/api/v1/dead-letters/{dl_id}/replay", json={"payload": fixed}, headers=auth)
    assert r.status_code == 202, r.get_json()
    raw = raw_row(engine, accepted.ids[0])
    assert raw.payload == fixed and raw.status == "received"
    assert dead_letter_row(engine, dl_id).payload == wrong  # what failed stays on record


def test_an_invalid_corrected_payload_is_422_and_changes_nothing(
    client, auth, engine, unique, api_redis_url, broker_prefix
):
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    r = client.post(
        f"/api/v1/dead-letters/{dl_id}/replay", json={"payload": student(unique, grade_level=99)}, headers=auth
    )
    assert r.status_code == 422
    assert r.get_json()["error"] == "validation_failed" and list(r.get_json()["errors"]) == ["grade_level"]
    r = client.post(f"/api/v1/dead-letters/{dl_id}/replay", json={"payload": [1, 2]}, headers=auth)
    assert r.status_code == 422 and "_schema" in r.get_json()["errors"]
    raw = raw_row(engine, accepted.ids[0])
    assert raw.status == "dead" and raw.payload == student(unique)
    dl = dead_letter_row(engine, dl_id)
    assert (dl.status, dl.replay_count, dl.last_replayed_at) == ("open", 0, None)
    assert queue_length(api_redis_url, broker_prefix) == 0


def test_the_corrected_payload_is_validated_as_of_the_record_received_at(client, auth, engine, unique):
    accepted, [dl_id] = dead(engine, "tutors", [tutor(unique)])
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE raw_records SET received_at = '2026-01-10T00:00:00Z' WHERE id = :id"),
            {"id": accepted.ids[0]},
        )
    later = tutor(unique, onboarding_date="2026-02-01")  # after received_at's date
    r = client.post(f"/api/v1/dead-letters/{dl_id}/replay", json={"payload": later}, headers=auth)
    assert r.status_code == 422 and "onboarding_date" in r.get_json()["errors"]


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1]", "application/json", 400),
        (b'{"payload": {}, "extra": 1}', "application/json", 400),
        (b'{"payload": {}}', "text/plain", 415),
    ],
)
def test_a_bad_replay_body_is_refused(client, auth, engine, unique, data, content_type, status):
    _, [dl_id] = dead(engine, "students", [student(unique)])
    r = client.post(f"/api/v1/dead-letters/{dl_id}/replay", data=data, content_type=content_type, headers=auth)
    assert r.status_code == status and r.get_json()["message"]
    assert dead_letter_row(engine, dl_id).status == "open"


def test_failing_again_after_a_replay_reopens_the_row_and_keeps_the_count(client, auth, engine, unique):
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    for expected in (1, 2):
        assert client.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=auth).status_code == 202
        assert bury(engine, accepted.ids, error="again") == [dl_id]
        dl = dead_letter_row(engine, dl_id)
        assert (dl.status, dl.replay_count, dl.last_outcome, dl.error) == ("open", expected, "dead", "again")
        assert dl.last_failed_at >= dl.last_replayed_at


def test_a_replayed_record_that_persists_shows_it(client, auth, engine, unique):
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    client.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=auth)
    chunk = enriched_chunk(engine, "students", accepted.ids)
    with engine.begin() as conn:
        persist_chunk(conn, get_registry()["students"], chunk["items"])
    body = client.get(f"/api/v1/dead-letters/{dl_id}", headers=auth).get_json()
    assert (body["status"], body["record_status"], body["last_outcome"]) == ("replayed", "persisted", "persisted")


def persist_replayed(engine, record_type, raw_ids):
    """What etl.persist does with these replayed records."""
    chunk = enriched_chunk(engine, record_type, raw_ids)
    with engine.begin() as conn:
        persist_chunk(conn, get_registry()[record_type], chunk["items"])


def test_a_correction_of_a_key_stored_since_is_superseded_by_that_record(client, auth, engine, unique):
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    newer = land(engine, "students", [student(unique, grade_level=10)])  # received later
    r = client.post(
        f"/api/v1/dead-letters/{dl_id}/replay", json={"payload": student(unique, grade_level=11)}, headers=auth
    )
    assert r.status_code == 202, r.get_json()
    persist_replayed(engine, "students", accepted.ids)

    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT grade_level, raw_record_id FROM students WHERE student_id = :k"), {"k": unique}
        ).one()
    assert tuple(stored) == (10, newer.ids[0])
    assert raw_row(engine, accepted.ids[0]).status == "persisted"  # settled all the same
    dl = dead_letter_row(engine, dl_id)
    assert (dl.status, dl.last_outcome, dl.replay_count) == ("superseded", "superseded", 1)
    assert (dl.superseded_by, dl.superseded_by_ingestion_id) == (newer.ids[0], newer.ingestion_id)

    body = client.get(f"/api/v1/dead-letters/{dl_id}", headers=auth).get_json()
    assert (body["status"], body["last_outcome"], body["record_status"]) == ("superseded", "superseded", "persisted")
    assert body["superseded_by"] == {"raw_record_id": newer.ids[0], "ingestion_id": str(newer.ingestion_id)}
    ingestion = str(accepted.ingestion_id)
    assert [d["id"] for d in listed(client, auth, ingestion_id=ingestion, status="superseded")["dead_letters"]] == [
        dl_id
    ]
    assert (
        listed(client, auth, ingestion_id=ingestion, status="all")["dead_letters"][0]["superseded_by"]
        == (body["superseded_by"])
    )
    for status in ("open", "replayed"):
        assert listed(client, auth, ingestion_id=ingestion, status=status)["dead_letters"] == []
    for method, url in [("post", f"/api/v1/dead-letters/{dl_id}/replay"), ("delete", f"/api/v1/dead-letters/{dl_id}")]:
        r = getattr(client, method)(url, headers=auth)
        assert r.status_code == 409 and r.get_json()["current_status"] == "superseded"
    status = client.get(f"/api/v1/ingestions/{ingestion}", headers=auth).get_json()
    assert status["status"] == "finished" and status["counts"]["persisted"] == 1


def test_a_correction_newer_than_the_stored_record_lands(client, auth, engine, unique):
    land(engine, "students", [student(unique, grade_level=10)])  # received earlier
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    client.post(f"/api/v1/dead-letters/{dl_id}/replay", json={"payload": student(unique, grade_level=11)}, headers=auth)
    persist_replayed(engine, "students", accepted.ids)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT grade_level FROM students WHERE student_id = :k"), {"k": unique}).one()
    assert stored.grade_level == 11
    body = client.get(f"/api/v1/dead-letters/{dl_id}", headers=auth).get_json()
    assert (body["status"], body["last_outcome"], body["superseded_by"]) == ("replayed", "persisted", None)


def test_of_two_replays_of_one_key_in_one_chunk_the_later_lands(client, auth, engine, unique):
    accepted, [first, second] = dead(engine, "students", [student(unique), student(unique, grade_level=10)])
    r = client.post("/api/v1/dead-letters/replay", json={"ingestion_id": str(accepted.ingestion_id)}, headers=auth)
    assert r.get_json() == {"replayed": 2, "remaining": 0}
    persist_replayed(engine, "students", accepted.ids)
    dl = dead_letter_row(engine, first)
    assert (dl.status, dl.superseded_by, dl.superseded_by_ingestion_id) == (
        "superseded",
        accepted.ids[1],
        accepted.ingestion_id,
    )
    dl = dead_letter_row(engine, second)
    assert (dl.status, dl.last_outcome, dl.superseded_by) == ("replayed", "persisted", None)


def test_a_row_stored_without_raw_record_id_is_named_by_its_ingestion(client, auth, engine, unique):
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    newer = land(engine, "students", [student(unique, grade_level=10)])
    with engine.begin() as conn:  # as stored before tables carried raw_record_id
        conn.execute(sa.text("UPDATE students SET raw_record_id = NULL WHERE student_id = :k"), {"k": unique})
    client.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=auth)
    persist_replayed(engine, "students", accepted.ids)
    body = client.get(f"/api/v1/dead-letters/{dl_id}", headers=auth).get_json()
    assert body["status"] == "superseded"
    assert body["superseded_by"] == {"raw_record_id": None, "ingestion_id": str(newer.ingestion_id)}


def test_replay_reopens_a_finished_ingestion(client, auth, engine, unique):
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    status = client.get(f"/api/v1/ingestions/{accepted.ingestion_id}", headers=auth).get_json()
    assert status["status"] == "finished" and status["counts"]["dead"] == 1
    client.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=auth)
    status = client.get(f"/api/v1/ingestions/{accepted.ingestion_id}", headers=auth).get_json()
    assert status["status"] == "running" and status["finished_at"] is None
    assert status["counts"]["in_flight"] == 1 and status["counts"]["dead"] == 0


# What a settler stores (etl_app.quality.settle): only while nothing of the ingestion is in flight,
# as its statement's snapshot shows it.
_SETTLER_STORES = sa.text(
    "UPDATE ingestions i SET quality = CAST('{}' AS jsonb), finished_at = now() "
    "WHERE i.id = :id AND i.quality IS NULL AND NOT EXISTS "
    "(SELECT 1 FROM raw_records r WHERE r.ingestion_id = i.id AND r.status = 'received')"
)


def test_a_replay_while_a_settler_stores_the_report_leaves_the_ingestion_running(client, auth, engine, unique):
    """The dead letter's settler measured the ingestion (its row held, FOR NO KEY UPDATE) while the
    record was dead, and stores its report with that view; a replay meanwhile must not leave the
    ingestion finished with the replayed record in flight. (A REPEATABLE READ settler stands for
    one whose storing statement began just before the replay committed.)"""
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    ident = accepted.ingestion_id
    answered = threading.Event()
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as settler:
        settler.execute(sa.text("SELECT 1 FROM ingestions WHERE id = :id FOR NO KEY UPDATE"), {"id": ident})

        def replay() -> None:
            assert client.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=auth).status_code == 202
            answered.set()

        thread = threading.Thread(target=replay)
        thread.start()
        answered.wait(2)  # the replay waits for the settler's row now; it used to commit at once
        settler.execute(_SETTLER_STORES, {"id": ident})
        settler.commit()
        thread.join(30)
    assert answered.is_set()
    status = client.get(f"/api/v1/ingestions/{ident}", headers=auth).get_json()
    assert (status["status"], status["finished_at"], status["quality"]) == ("running", None, None)
    assert status["counts"]["in_flight"] == 1 and status["counts"]["dead"] == 0


def test_replay_with_the_broker_down_is_still_202_and_left_to_the_sweeper(make_app, auth, engine, unique):
    client = make_app(broker_url="redis://127.0.0.1:1/0", publish_timeout_seconds=1.0).test_client()
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    r = client.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=auth)
    assert r.status_code == 202
    raw = raw_row(engine, accepted.ids[0])
    assert raw.status == "received" and raw.enqueued_at is None
    assert dead_letter_row(engine, dl_id).status == "replayed"


# -- discarding -----------------------------------------------------------------------------------


def test_discard_closes_it_and_the_record_stays_dead(client, auth, engine, unique):
    accepted, [a, b] = dead(engine, "students", [student(f"{unique}-a"), student(f"{unique}-b")])
    r = client.post(f"/api/v1/dead-letters/{a}/discard", headers=auth)
    assert r.status_code == 200 and r.get_json()["status"] == "discarded"
    assert client.post(f"/api/v1/dead-letters/{a}/discard", headers=auth).status_code == 200  # idempotent
    assert client.delete(f"/api/v1/dead-letters/{b}", headers=auth).status_code == 200
    for dl_id, raw_id in zip((a, b), accepted.ids, strict=True):
        assert dead_letter_row(engine, dl_id).status == "discarded"
        assert raw_row(engine, raw_id).status == "dead"
    r = client.post(f"/api/v1/dead-letters/{a}/replay", headers=auth)
    assert r.status_code == 409 and r.get_json()["current_status"] == "discarded"


def test_a_replayed_dead_letter_cannot_be_discarded(client, auth, engine, unique):
    _, [dl_id] = dead(engine, "students", [student(unique)])
    client.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=auth)
    r = client.delete(f"/api/v1/dead-letters/{dl_id}", headers=auth)
    assert r.status_code == 409 and r.get_json()["error"] == "not_open"


# -- bulk replay ----------------------------------------------------------------------------------


def test_bulk_replay_by_filters_in_the_body_or_the_query(client, auth, engine, unique, api_redis_url, broker_prefix):
    accepted, ids = dead(engine, "students", [student(f"{unique}-{i}") for i in range(4)])
    _, other_ids = dead(engine, "students", [student(f"{unique}-x")])
    with engine.begin() as conn:
        actions.discard(conn, ids[0])
    r = client.post(
        "/api/v1/dead-letters/replay", json={"ingestion_id": str(accepted.ingestion_id), "limit": 2}, headers=auth
    )
    assert r.status_code == 202 and r.get_json() == {"replayed": 2, "remaining": 1}
    r = client.post(
        "/api/v1/dead-letters/replay",
        query_string={"ingestion_id": str(accepted.ingestion_id), "record_type": "students"},
        headers=auth,
    )
    assert r.status_code == 202 and r.get_json() == {"replayed": 1, "remaining": 0}
    assert [dead_letter_row(engine, i).status for i in ids] == ["discarded", "replayed", "replayed", "replayed"]
    assert [raw_row(engine, i).status for i in accepted.ids] == ["dead", "received", "received", "received"]
    assert dead_letter_row(engine, other_ids[0]).status == "open"
    assert queue_length(api_redis_url, broker_prefix) == 2  # one chain per call (one chunk each)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"json": {"status": "replayed", "all": True}}, "status"),
        ({"json": {"record_type": "students", "typo": 1}}, "typo"),
        ({"json": {"ingestion_id": 5}}, "ingestion_id"),
        ({"json": {"limit": 10_001}}, "limit"),
        ({"query_string": {"error_type": "nope"}}, "error_type"),
    ],
)
def test_bulk_replay_refuses_bad_filters(client, auth, kwargs, parameter):
    r = client.post("/api/v1/dead-letters/replay", headers=auth, **kwargs)
    assert r.status_code == 400 and r.get_json()["parameter"] == parameter


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"query_string": {"record_type": ""}}, "record_type"),  # ?record_type=$UNSET
        ({"query_string": {"record_type": "students", "ingestion_id": ""}}, "ingestion_id"),
        ({"json": {"error_type": ""}}, "error_type"),
        ({"json": {"record_type": None}}, "record_type"),
        ({"json": {"record_type": "", "all": True}}, "record_type"),  # all does not excuse an empty one
        ({"json": {"since": "", "dry_run": True}}, "since"),
        ({}, None),  # no filter
        ({"json": {}}, None),
        ({"json": {"status": "open"}}, None),  # status alone narrows nothing
        ({"json": {"all": False}}, None),
        ({"query_string": {"all": "false"}}, None),
    ],
)
def test_bulk_replay_without_a_filter_or_with_an_empty_one_is_refused(client, auth, engine, unique, kwargs, parameter):
    _, ids = dead(engine, "students", [student(f"{unique}-{i}") for i in range(2)])
    r = client.post("/api/v1/dead-letters/replay", headers=auth, **kwargs)
    assert r.status_code == 400, r.get_json()
    body = r.get_json()
    assert body["error"] == "filter_required" and body["parameter"] == parameter
    assert (parameter or "all: true") in body["message"]
    assert [dead_letter_row(engine, i).status for i in ids] == ["open", "open"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"all": True, "recordtype": "students"}},
        {"query_string": {"all": "true", "dryrun": "true"}},
        {"json": {"all": "yes"}},
        {"json": {"record_type": "students", "dry_run": 1}},
    ],
)
def test_bulk_replay_refuses_unknown_parameters_and_bad_flags(client, auth, kwargs):
    r = client.post("/api/v1/dead-letters/replay", headers=auth, **kwargs)
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_parameter"


def test_bulk_replay_dry_run_counts_and_changes_nothing(client, auth, engine, unique, api_redis_url, broker_prefix):
    accepted, ids = dead(engine, "students", [student(f"{unique}-{i}") for i in range(3)])
    with engine.begin() as conn:
        actions.discard(conn, ids[0])
    before = [tuple(dead_letter_row(engine, i)) for i in ids]
    target = {"ingestion_id": str(accepted.ingestion_id)}
    r = client.post("/api/v1/dead-letters/replay", json={**target, "dry_run": True}, headers=auth)
    assert r.status_code == 200 and r.get_json() == {"dry_run": True, "would_replay": 2, "remaining": 0}
    r = client.post("/api/v1/dead-letters/replay", json={**target, "dry_run": True, "limit": 1}, headers=auth)
    assert r.get_json() == {"dry_run": True, "would_replay": 1, "remaining": 1}
    r = client.post("/api/v1/dead-letters/replay", query_string={**target, "dry_run": "1"}, headers=auth)
    assert r.get_json()["would_replay"] == 2
    # all: true with no filter passes the gate; the dry run counts every open one (these among them)
    r = client.post("/api/v1/dead-letters/replay", json={"all": True, "dry_run": True}, headers=auth)
    assert r.status_code == 200 and r.get_json()["would_replay"] >= 2
    assert [tuple(dead_letter_row(engine, i)) for i in ids] == before
    assert {raw_row(engine, i).status for i in accepted.ids} == {"dead"}
    assert queue_length(api_redis_url, broker_prefix) == 0


def test_bulk_replay_with_all_and_a_filter_replays(client, auth, engine, unique):
    accepted, ids = dead(engine, "students", [student(f"{unique}-{i}") for i in range(2)])
    r = client.post(
        "/api/v1/dead-letters/replay", json={"all": True, "ingestion_id": str(accepted.ingestion_id)}, headers=auth
    )
    assert r.status_code == 202 and r.get_json() == {"replayed": 2, "remaining": 0}
    assert [dead_letter_row(engine, i).status for i in ids] == ["replayed", "replayed"]


def test_bulk_replay_wants_the_filters_in_one_place(client, auth):
    r = client.post(
        "/api/v1/dead-letters/replay", json={"record_type": "students"}, query_string={"since": "2026"}, headers=auth
    )
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_parameter"


def test_openapi_documents_the_dead_letter_endpoints(client, auth):
    paths = client.get("/openapi.json", headers=auth).get_json()["paths"]
    assert {"get"} <= set(paths["/api/v1/dead-letters"])
    assert {"get", "delete"} <= set(paths["/api/v1/dead-letters/{id}"])
    assert "409" in paths["/api/v1/dead-letters/{id}/replay"]["post"]["responses"]
    assert "post" in paths["/api/v1/dead-letters/replay"] and "post" in paths["/api/v1/dead-letters/{id}/discard"]


# -- automatic replay of missing_parent children --------------------------------------------------


def missing_parent_session(engine, unique, tutor_id):
    accepted = store(engine, "sessions", [session(f"{unique}-S", tutor_id, f"{unique}-ST")])
    ids = bury(
        engine,
        accepted.ids,
        error_type="missing_parent",
        error=f"parent tutors:{tutor_id} not found",
        waiting_on=f"tutors:{tutor_id}",
        task_name="etl.enrich",
    )
    return accepted, ids


def test_dead_records_keep_waiting_on_only_for_missing_parent(engine, unique):
    accepted, _ = missing_parent_session(engine, unique, f"{unique}-T")
    assert raw_row(engine, accepted.ids[0]).waiting_on == f"tutors:{unique}-T"
    other = store(engine, "sessions", [session(f"{unique}-S2", f"{unique}-T", f"{unique}-ST")])
    with engine.begin() as conn:  # it waited once, then failed for another reason
        conn.execute(sa.text("UPDATE raw_records SET waiting_on = 'tutors:x' WHERE id = :id"), {"id": other.ids[0]})
    bury(engine, other.ids, error_type="internal")
    assert raw_row(engine, other.ids[0]).waiting_on is None


def test_replay_children_replays_open_missing_parent_dead_letters_of_those_parents(engine, unique):
    t = f"{unique}-T"
    waiting, [wanted] = missing_parent_session(engine, unique, t)
    _, [discarded] = missing_parent_session(engine, f"{unique}-d", t)
    _, [elsewhere] = missing_parent_session(engine, f"{unique}-e", f"{unique}-OTHER")
    with engine.begin() as conn:
        actions.discard(conn, discarded)
        replayed = actions.replay_children(conn, "tutors", [t])
    assert replayed.dead_letter_ids == [wanted] and replayed.records == {"sessions": waiting.ids}
    dl = dead_letter_row(engine, wanted)
    assert (dl.status, dl.replay_count) == ("replayed", 1)
    raw = raw_row(engine, waiting.ids[0])
    assert (raw.status, raw.waiting_on, raw.waiting_since) == ("received", None, None)
    assert dead_letter_row(engine, discarded).status == "discarded"
    assert dead_letter_row(engine, elsewhere).status == "open"


def test_persisting_a_parent_replays_its_dead_children(make_app, engine, unique, api_redis_url, broker_prefix):
    app = make_app()
    celery_app = app.extensions["celery"]
    t, st = f"{unique}-T", f"{unique}-ST"
    land(engine, "students", [student(st)])
    child, [dl_id] = missing_parent_session(engine, unique, t)
    parent = store(engine, "tutors", [tutor(t)])
    chunk = enriched_chunk(engine, "tutors", parent.ids, stash=app.extensions["etl"].stash)
    result = celery_app.tasks[persist.name].apply(args=(chunk,))
    assert result.get() == 1
    assert raw_row(engine, child.ids[0]).status == "received"
    dl = dead_letter_row(engine, dl_id)
    assert (dl.status, dl.replay_count, dl.last_outcome) == ("replayed", 1, "replayed")
    assert queue_length(api_redis_url, broker_prefix) == 1  # the child's chain
    # ... and the child now lands, which the dead letter shows
    chunk = enriched_chunk(engine, "sessions", child.ids)
    with engine.begin() as conn:
        persist_chunk(conn, get_registry()["sessions"], chunk["items"])
    assert dead_letter_row(engine, dl_id).last_outcome == "persisted"


def test_a_child_dead_lettered_after_its_parent_landed_is_replayed_at_once(make_app, engine, unique):
    celery_app = make_app().extensions["celery"]
    t = f"{unique}-T"
    land(engine, "tutors", [tutor(t)])
    accepted = store(engine, "sessions", [session(f"{unique}-S", t, f"{unique}-ST")])
    failure = {
        "id": accepted.ids[0],
        "error_type": "missing_parent",
        "error": "parent not found",
        "traceback": None,
        "waiting_on": f"tutors:{t}",
    }
    celery_app.tasks["etl.dead_letter.record"].apply(args=("sessions", [failure], "etl.enrich")).get()
    assert raw_row(engine, accepted.ids[0]).status == "received"
    with engine.connect() as conn:
        dl = conn.execute(
            sa.text("SELECT status, replay_count FROM dead_letters WHERE raw_record_id = :id"), {"id": accepted.ids[0]}
        ).one()
    assert tuple(dl) == ("replayed", 1)


def test_replay_if_parents_exist_leaves_the_others_dead(engine, unique):
    accepted, [dl_id] = missing_parent_session(engine, unique, f"{unique}-NOBODY")
    with engine.begin() as conn:
        replayed = actions.replay_if_parents_exist(conn, get_registry(), accepted.ids)
    assert replayed.count == 0 and dead_letter_row(engine, dl_id).status == "open"


def test_parse_filters_reads_query_strings_and_json_alike():
    names = get_registry().names()
    ident = uuid.uuid4()
    f = parse_filters({"ingestion_id": str(ident), "since": "2026-11-22T10:00:00+01:00", "limit": 5}, names, ("limit",))
    assert f.ingestion_id == ident and f.since.utcoffset() == timedelta(hours=1) and f.status == "open"
    assert parse_filters({}, names).status == "open"
    with pytest.raises(InvalidParameter) as refused:  # an unset shell variable, most likely
        parse_filters({"status": ""}, names)
    assert refused.value.name == "status"
