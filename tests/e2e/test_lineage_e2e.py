"""The lineage of a record end to end: HTTP → real celery worker → dead letter → corrected replay →
stored, then traced with `GET /api/v1/records/sessions/{key}`."""

from __future__ import annotations

from datetime import datetime

import pytest

from etl_app.roles import key_id

from tests.helpers.payloads import session, student, tutor
from tests.helpers.procs import wait_until
from tests.helpers.support import API_KEY

pytestmark = pytest.mark.slow


def test_a_session_dead_lettered_then_landed_by_a_corrected_replay_shows_its_whole_history(api, unique, sql):
    t, st, s = f"{unique}-T", f"{unique}-ST", f"{unique}-S"
    api.post("tutors", tutor(t))
    api.post("students", student(st))
    first = api.post("sessions", session(s, t, st)).json()["ingestion_id"]
    assert api.wait_finished(first, timeout=30)["counts"]["persisted"] == 1

    # An update naming a tutor that never comes: dead-lettered missing_parent once its wait runs out.
    wrong = session(s, f"{unique}-NOBODY", st, duration_minutes=45)
    second = api.post("sessions", wrong).json()["ingestion_id"]
    assert api.wait_finished(second, timeout=60)["counts"]["dead"] == 1
    [dead] = api.get(f"dead-letters?ingestion_id={second}").json()["dead_letters"]
    assert dead["error_type"] == "missing_parent"

    r = api.post(f"dead-letters/{dead['id']}/replay", {"payload": {**wrong, "tutor_id": t}})
    assert r.status_code == 202, r.text
    assert api.wait_finished(second, timeout=30)["counts"]["persisted"] == 1
    wait_until(
        lambda: sql("SELECT 1 FROM sessions WHERE session_id = :s AND duration_minutes = 45", s=s),
        30,
        what="the corrected session to land",
    )

    body = api.get(f"records/sessions/{s}").json()
    assert body["fields"]["tutor_id"] == t and body["fields"]["duration_minutes"] == 45
    lin = body["lineage"]
    assert lin["source"] == "replay" and lin["ingestion_source"] == "api" and lin["file"] is None
    assert (lin["ingestion_id"], lin["raw_record_id"]) == (second, dead["raw_record_id"])
    received, enriched, persisted = (
        datetime.fromisoformat(lin[k]) for k in ("received_at", "enriched_at", "persisted_at")
    )
    assert received <= enriched <= persisted
    assert lin["attempts"] >= 1  # it waited for its tutor at least once before it was dead-lettered

    older, replayed = lin["history"]
    assert (older["ingestion_id"], older["status"], older["stored"], older["dead_letter"]) == (
        first,
        "persisted",
        False,
        None,
    )
    assert (replayed["ingestion_id"], replayed["raw_record_id"], replayed["stored"]) == (
        second,
        dead["raw_record_id"],
        True,
    )
    assert replayed["status"] == "persisted" and replayed["attempts"] == lin["attempts"]
    dl = replayed["dead_letter"]
    assert (dl["id"], dl["error_type"], dl["status"]) == (dead["id"], "missing_parent", "replayed")
    assert (dl["replay_count"], dl["last_outcome"], dl["replays_not_listed"]) == (1, "persisted", 0)
    assert dl["edited_fields"] == ["tutor_id"]
    [edit] = replayed["replays"]
    assert (edit["action"], edit["outcome"], edit["key_id"]) == ("edit", "ok", key_id(API_KEY))
    assert datetime.fromisoformat(edit["at"]) <= persisted
    assert lin["history_truncated"] is False
