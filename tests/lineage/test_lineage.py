"""The lineage of one stored record (`GET /api/v1/records/{type}/{key}`), on the real database (no
worker): raw records, dead letters, replays and rejections of one key, as a user traces it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jsonschema_rs
import sqlalchemy as sa

from etl_app import lineage as lineage_module
from etl_app.clock import utcnow
from etl_app.ingest.rejections import store_rejections
from etl_app.pipeline.persist import persist_chunk
from etl_app.record_types import get_registry
from etl_app.roles import key_id

from tests.helpers.dead_letters import dead, enriched_chunk, land, store
from tests.helpers.payloads import student, tutor
from tests.helpers.support import API_KEY


def persist(engine, record_type, raw_ids):
    """What etl.persist does with these records."""
    chunk = enriched_chunk(engine, record_type, raw_ids)
    with engine.begin() as conn:
        persist_chunk(conn, get_registry()[record_type], chunk["items"])


def lineage_of(client, auth, key, record_type="students"):
    r = client.get(f"/api/v1/records/{record_type}/{key}", headers=auth)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["lineage"]


def as_upload(engine, ingestion_id, filename, rows_by_raw_id):
    """Make an ingestion an upload of ``filename`` whose raw records came from these rows."""
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE ingestions SET source = 'upload' WHERE id = :id"), {"id": ingestion_id})
        conn.execute(
            sa.text(
                "INSERT INTO uploads (id, record_type, filename, format, size, sha256, chunk_bytes, status) "
                "VALUES (:id, 'students', :f, 'csv', 100, 'x', 1048576, 'parsed')"
            ),
            {"id": ingestion_id, "f": filename},
        )
        for raw_id, row in rows_by_raw_id.items():
            conn.execute(sa.text("UPDATE raw_records SET source_row = :r WHERE id = :id"), {"r": row, "id": raw_id})


def test_an_uploaded_record_names_its_file_and_row_and_the_refused_row_of_its_key(client, auth, engine, unique):
    refused_at = utcnow() - timedelta(minutes=5)
    earlier = store(engine, "students", [student(f"{unique}-other")], received_at=refused_at)
    with engine.begin() as conn:  # an earlier upload refused a row of this key
        store_rejections(
            conn,
            earlier.ingestion_id,
            get_registry()["students"],
            [
                {
                    "index": 3,
                    "errors": {"grade_level": ["Must be between 1 and 12."]},
                    "raw": student(unique, grade_level=99),
                }
            ],
            refused_at,
        )
    as_upload(engine, earlier.ingestion_id, "first.csv", {})

    accepted = store(engine, "students", [student(unique, source="sis-export")])
    as_upload(engine, accepted.ingestion_id, "roster fixed.csv", {accepted.ids[0]: 7})
    persist(engine, "students", accepted.ids)

    lin = lineage_of(client, auth, unique)
    assert lin["source"] == "upload" and lin["ingestion_source"] == "upload"
    assert lin["source_label"] == "sis-export"
    assert lin["file"] == {"filename": "roster fixed.csv", "row": 7}
    assert (lin["ingestion_id"], lin["raw_record_id"]) == (str(accepted.ingestion_id), accepted.ids[0])
    assert lin["attempts"] == 0 and lin["schema_version"] == get_registry()["students"].schema_version
    assert all(lin[k] is not None for k in ("received_at", "enriched_at", "persisted_at"))
    assert lin["history_truncated"] is False

    refused, kept = lin["history"]
    assert refused["kind"] == "rejection" and refused["status"] == "rejected" and refused["stored"] is False
    assert refused["ingestion_id"] == str(earlier.ingestion_id) and refused["source"] == "upload"
    assert refused["position"] == 3 and refused["file"] == {"filename": "first.csv", "row": 3}
    assert refused["errors"] == {"grade_level": ["Must be between 1 and 12."]}
    assert refused["raw_record_id"] is None and refused["dead_letter"] is None
    assert kept["raw_record_id"] == accepted.ids[0] and kept["status"] == "persisted" and kept["stored"] is True
    assert kept["file"] == {"filename": "roster fixed.csv", "row": 7} and kept["settled_at"] is not None


def test_a_record_landed_by_an_edited_replay_shows_source_replay_and_the_whole_history(client, auth, engine, unique):
    first = land(engine, "students", [student(unique, grade_level=8)])
    accepted, [dl_id] = dead(engine, "students", [student(unique, name="Sam Typo")], error="grade_level: too low")
    r = client.post(
        f"/api/v1/dead-letters/{dl_id}/replay", json={"payload": student(unique, name="Sam Fixed")}, headers=auth
    )
    assert r.status_code == 202, r.get_json()
    persist(engine, "students", accepted.ids)
    pending = store(engine, "students", [student(unique, grade_level=12)])  # still in flight

    body = client.get(f"/api/v1/records/students/{unique}", headers=auth).get_json()
    assert body["fields"]["name"] == "Sam Fixed"
    lin = body["lineage"]
    assert lin["source"] == "replay" and lin["ingestion_source"] == "api"
    assert lin["raw_record_id"] == accepted.ids[0] and lin["file"] is None
    assert [h["raw_record_id"] for h in lin["history"]] == [first.ids[0], accepted.ids[0], pending.ids[0]]
    assert [h["status"] for h in lin["history"]] == ["persisted", "persisted", "received"]
    assert [h["stored"] for h in lin["history"]] == [False, True, False]
    assert lin["history"][2]["settled_at"] is None and lin["history"][0]["dead_letter"] is None

    replayed = lin["history"][1]
    dl = replayed["dead_letter"]
    assert (dl["id"], dl["error_type"], dl["error"]) == (dl_id, "validation", "grade_level: too low")
    assert (dl["status"], dl["replay_count"], dl["last_outcome"]) == ("replayed", 1, "persisted")
    assert dl["last_replayed_at"] is not None and dl["superseded_by"] is None
    assert dl["edited_fields"] == ["name"] and dl["replays_not_listed"] == 0
    [edit] = replayed["replays"]
    assert (edit["action"], edit["outcome"], edit["key_id"]) == ("edit", "ok", key_id(API_KEY))


def json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: ``nullable`` becomes a null type (and a null enum value)."""
    if isinstance(node, list):
        return [json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def undocumented(value: Any, schema: dict, where: str = "lineage") -> list[str]:
    """Keys of the answer that its schema does not name, with their place."""
    missing = []
    if isinstance(value, dict) and "properties" in schema:
        for key, inner in value.items():
            if key not in schema["properties"]:
                missing.append(f"{where}.{key}")
            else:
                missing += undocumented(inner, schema["properties"][key], f"{where}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            missing += undocumented(item, schema["items"], f"{where}[]")
    return missing


def test_the_answer_is_the_documented_lineage(client, auth, engine, unique):
    """What /openapi.json promises for the record's lineage, field by field, types and nulls."""
    land(engine, "students", [student(unique)])
    accepted, [dl_id] = dead(engine, "students", [student(unique, name="Sam Typo")])
    client.post(f"/api/v1/dead-letters/{dl_id}/replay", json={"payload": student(unique, grade_level=11)}, headers=auth)
    persist(engine, "students", accepted.ids)
    with engine.begin() as conn:
        store_rejections(
            conn,
            accepted.ingestion_id,
            get_registry()["students"],
            [{"index": 1, "errors": {"x": ["bad"]}, "raw": student(unique)}],
            utcnow(),
        )
    spec = client.get("/openapi.json", headers=auth).get_json()
    answer = spec["paths"]["/api/v1/records/{record_type}/{key}"]["get"]["responses"]["200"]
    schema = answer["content"]["application/json"]["schema"]["properties"]["lineage"]
    lin = lineage_of(client, auth, unique)
    assert [h["kind"] for h in lin["history"]] == ["raw_record", "raw_record", "rejection"]
    entry = schema["properties"]["history"]["items"]["properties"]
    assert {"dead_letter", "replays", "file"} <= set(entry) and "replay_count" in entry["dead_letter"]["properties"]
    assert undocumented(lin, schema) == []
    errors = [
        e.message for e in jsonschema_rs.validator_for(json_schema(schema), validate_formats=True).iter_errors(lin)
    ]
    assert errors == []


def test_a_superseded_replay_and_a_bulk_replay_are_shown_for_what_they_are(client, auth, engine, unique):
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    newer = land(engine, "students", [student(unique, grade_level=10)])
    r = client.post("/api/v1/dead-letters/replay", json={"ingestion_id": str(accepted.ingestion_id)}, headers=auth)
    assert r.get_json()["replayed"] == 1
    persist(engine, "students", accepted.ids)
    again = client.post(f"/api/v1/dead-letters/{dl_id}/replay", headers=auth)
    assert again.status_code == 409

    lin = lineage_of(client, auth, unique)
    assert lin["source"] == "api" and lin["raw_record_id"] == newer.ids[0]
    old, kept = lin["history"]
    assert kept["stored"] is True and old["stored"] is False and old["status"] == "persisted"
    dl = old["dead_letter"]
    assert dl["status"] == "superseded" and dl["last_outcome"] == "superseded"
    assert dl["superseded_by"] == {"raw_record_id": newer.ids[0], "ingestion_id": str(newer.ingestion_id)}
    # The bulk replay names filters, not this dead letter: counted, not listed. The refused single
    # replay (409) is listed as failed.
    assert dl["replay_count"] == 1 and dl["replays_not_listed"] == 1 and dl["edited_fields"] == []
    assert [(a["action"], a["outcome"]) for a in old["replays"]] == [("replay", "failed")]


def test_an_upload_row_kept_as_a_rejected_raw_record_and_a_rejection_is_one_entry(client, auth, engine, unique):
    upload = store(engine, "students", [student(f"{unique}-other")], received_at=utcnow() - timedelta(minutes=1))
    as_upload(engine, upload.ingestion_id, "roster.xlsx", {})
    errors = {"grade_level": ["Not a valid integer."]}
    with engine.begin() as conn:
        refused_id = conn.execute(
            sa.text(
                "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, status, source_row, "
                "received_at, updated_at) SELECT ingestion_id, 'students', :k, NULL, 'rejected', 4, received_at, "
                "received_at FROM raw_records WHERE id = :id RETURNING id"
            ),
            {"k": unique, "id": upload.ids[0]},
        ).scalar_one()
        store_rejections(
            conn,
            upload.ingestion_id,
            get_registry()["students"],
            [{"index": 4, "errors": errors, "raw": {"student_id": unique}}],
            utcnow(),
        )
    land(engine, "students", [student(unique)])

    refused, kept = lineage_of(client, auth, unique)["history"]
    assert (refused["kind"], refused["raw_record_id"], refused["status"]) == ("raw_record", refused_id, "rejected")
    assert (refused["position"], refused["errors"]) == (4, errors) and refused["rejection_id"] is not None
    assert refused["file"] == {"filename": "roster.xlsx", "row": 4}
    assert kept["stored"] is True


def test_history_lists_the_latest_entries_oldest_first_and_says_when_it_is_cut(
    client, auth, engine, unique, monkeypatch
):
    start = utcnow() - timedelta(hours=1)
    ids = [
        store(engine, "students", [student(unique, grade_level=1 + i)], received_at=start + timedelta(minutes=i)).ids[0]
        for i in range(5)
    ]
    persist(engine, "students", ids)
    monkeypatch.setattr(lineage_module, "HISTORY_LIMIT", 3)
    lin = lineage_of(client, auth, unique)
    assert lin["history_truncated"] is True
    assert [h["raw_record_id"] for h in lin["history"]] == ids[2:]
    assert lin["history"][-1]["stored"] is True and lin["raw_record_id"] == ids[-1]

    monkeypatch.setattr(lineage_module, "HISTORY_LIMIT", 5)
    lin = lineage_of(client, auth, unique)
    assert lin["history_truncated"] is False and [h["raw_record_id"] for h in lin["history"]] == ids


def test_history_keeps_to_its_own_type_and_key(client, auth, engine, unique):
    land(engine, "students", [student(unique), student(f"{unique}0")])
    land(engine, "tutors", [tutor(unique)])  # another type's record with the same key
    lin = lineage_of(client, auth, unique)
    assert len(lin["history"]) == 1 and lin["history"][0]["stored"] is True


def test_an_unknown_key_or_type_is_404(client, auth, engine, unique):
    r = client.get(f"/api/v1/records/students/{unique}-nobody", headers=auth)
    assert r.status_code == 404 and r.get_json()["error"] == "not_found"
    assert client.get(f"/api/v1/records/nothings/{unique}", headers=auth).status_code == 404
