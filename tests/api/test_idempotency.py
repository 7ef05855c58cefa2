"""``Idempotency-Key`` on the submits and the upload: the same key and request get the first
answer again (marked as a replay) and nothing is stored twice; another request under the key is
a 422; keys belong to their API key and expire; concurrent requests with one key store one
ingestion, and a request meeting a key still being stored waits for its outcome."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import orjson
import pytest
import sqlalchemy as sa

from etl_app.clock import utcnow
from etl_app.config import Settings
from etl_app.ingest import idempotency
from etl_app.jobs.runner import run_job
from etl_app.roles import key_id

from tests.helpers.payloads import student
from tests.helpers.procs import wait_until
from tests.helpers.support import API_KEY

OTHER_KEY = "other-key-" + uuid.uuid4().hex[:8]


def keyed(auth: dict[str, str], key: str) -> dict[str, str]:
    return {**auth, "Idempotency-Key": key}


def ingestions_of(engine: sa.Engine, natural_keys: list[str]) -> list[str]:
    """The ingestions whose records (stored or refused) carry these natural keys."""
    with engine.connect() as conn:
        return sorted(
            str(i)
            for i in conn.scalars(
                sa.text(
                    "SELECT ingestion_id FROM raw_records WHERE natural_key = ANY(:k) "
                    "UNION SELECT ingestion_id FROM rejections WHERE natural_key = ANY(:k)"
                ),
                {"k": natural_keys},
            )
        )


def raw_count(engine: sa.Engine, natural_key: str) -> int:
    with engine.connect() as conn:
        return conn.scalar(sa.text("SELECT count(*) FROM raw_records WHERE natural_key = :k"), {"k": natural_key})


def ingestion_counts(engine: sa.Engine, ingestion_id: str) -> tuple[int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT accepted, rejected FROM ingestions WHERE id = :i"), {"i": ingestion_id}
        ).one()
    return row.accepted, row.rejected


def test_a_single_record_sent_again_with_its_key_gets_the_first_answer_marked_as_a_replay(client, auth, engine, unique):
    key = str(uuid.uuid4())
    first = client.post("/api/v1/students", json=student(unique), headers=keyed(auth, key))
    again = client.post("/api/v1/students", json=student(unique), headers=keyed(auth, key))
    assert first.status_code == again.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()  # byte for byte
    body = first.get_json()
    assert body["accepted"] == 1 and body["rejected"] == 0
    assert ingestions_of(engine, [unique]) == [body["ingestion_id"]]
    assert raw_count(engine, unique) == 1


@pytest.mark.parametrize("ndjson", [False, True], ids=["json-array", "ndjson"])
def test_a_batch_sent_again_with_its_key_is_stored_once_with_its_rejections_once(client, auth, engine, unique, ndjson):
    records = [student(f"{unique}-a"), student(f"{unique}-bad", grade_level="nine"), student(f"{unique}-b")]
    if ndjson:
        data = b"\n".join(orjson.dumps(r) for r in records)
        send = {"data": data, "content_type": "application/x-ndjson"}
    else:
        send = {"json": records}
    key = f"batch-{unique}"
    first = client.post("/api/v1/students/batch", headers=keyed(auth, key), **send)
    again = client.post("/api/v1/students/batch", headers=keyed(auth, key), **send)
    assert first.status_code == again.status_code == 202
    assert again.get_data() == first.get_data() and again.headers["Idempotent-Replayed"] == "true"
    body = first.get_json()
    assert (body["accepted"], body["rejected"], body["errors"][0]["index"]) == (2, 1, 1)
    assert ingestions_of(engine, [f"{unique}-a", f"{unique}-b", f"{unique}-bad"]) == [body["ingestion_id"]]
    assert ingestion_counts(engine, body["ingestion_id"]) == (2, 1)  # not doubled
    assert raw_count(engine, f"{unique}-a") == raw_count(engine, f"{unique}-b") == 1


def test_a_large_batch_sent_again_is_stored_and_sent_once(make_app, auth, engine, unique):
    """A batch of a chunk or more goes through COPY and is published by the request itself."""
    client = make_app(chunk_size=5).test_client()
    records = [student(f"{unique}-{i}") for i in range(70)]
    key = f"large-{unique}"
    first = client.post("/api/v1/students/batch", json=records, headers=keyed(auth, key))
    again = client.post("/api/v1/students/batch", json=records, headers=keyed(auth, key))
    assert first.status_code == again.status_code == 202 and again.get_data() == first.get_data()
    assert ingestions_of(engine, [r["student_id"] for r in records]) == [first.get_json()["ingestion_id"]]
    assert ingestion_counts(engine, first.get_json()["ingestion_id"]) == (70, 0)


def test_the_key_used_with_another_body_or_path_is_a_422_and_stores_nothing(client, auth, engine, unique):
    key = f"reuse-{unique}"
    first = client.post("/api/v1/students", json=student(f"{unique}-1"), headers=keyed(auth, key))
    assert first.status_code == 202
    other_body = client.post("/api/v1/students", json=student(f"{unique}-2"), headers=keyed(auth, key))
    other_path = client.post("/api/v1/students/batch", json=[student(f"{unique}-1")], headers=keyed(auth, key))
    for refused in (other_body, other_path):
        assert refused.status_code == 422, refused.get_json()
        body = refused.get_json()
        assert body["error"] == "idempotency_key_reused" and "another request" in body["message"]
        assert body["ingestion_id"] == first.get_json()["ingestion_id"]
    assert raw_count(engine, f"{unique}-2") == 0
    assert ingestions_of(engine, [f"{unique}-1", f"{unique}-2"]) == [first.get_json()["ingestion_id"]]


def test_the_quoted_form_of_the_draft_names_the_same_key(client, auth, unique):
    first = client.post("/api/v1/students", json=student(unique), headers=keyed(auth, f"q-{unique}"))
    again = client.post("/api/v1/students", json=student(unique), headers=keyed(auth, f'"q-{unique}"'))
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()


@pytest.mark.parametrize(
    "value",
    ["", "   ", "x" * 256, '"' + "x" * 256 + '"', "caf\u00e9", "tab\tinside", '"unclosed', '""', '"bad \\n escape"'],
    ids=["empty", "blank", "too-long", "quoted-too-long", "non-ascii", "control", "unclosed", "quoted-empty", "escape"],
)
def test_a_malformed_key_is_a_400_and_nothing_is_stored(client, auth, engine, unique, value):
    r = client.post("/api/v1/students", json=student(unique), headers=keyed(auth, value))
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["error"] == "invalid_idempotency_key" and "Idempotency-Key" in r.get_json()["message"]
    assert raw_count(engine, unique) == 0


def test_a_key_of_255_characters_is_accepted(client, auth, unique):
    r = client.post("/api/v1/students", json=student(unique), headers=keyed(auth, "k" * 255))
    assert r.status_code == 202


def test_keys_of_two_api_keys_are_independent(make_app, auth, engine, unique):
    client = make_app(api_keys=(API_KEY, OTHER_KEY)).test_client()
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    key = f"shared-{unique}"
    mine = client.post("/api/v1/students", json=student(unique), headers=keyed(auth, key))
    theirs = client.post("/api/v1/students", json=student(unique), headers=keyed(other, key))
    assert mine.status_code == theirs.status_code == 202
    assert "Idempotent-Replayed" not in theirs.headers
    assert mine.get_json()["ingestion_id"] != theirs.get_json()["ingestion_id"]
    assert raw_count(engine, unique) == 2
    # and another body under the same key is still each one's own business: a 422 for both
    assert client.post("/api/v1/students", json=student(f"{unique}-x"), headers=keyed(other, key)).status_code == 422


def test_without_the_header_nothing_is_kept_and_a_resend_is_a_new_ingestion(client, auth, engine, unique):
    first = client.post("/api/v1/students", json=student(unique), headers=auth)
    again = client.post("/api/v1/students", json=student(unique), headers=auth)
    assert first.get_json()["ingestion_id"] != again.get_json()["ingestion_id"]
    assert "Idempotent-Replayed" not in again.headers
    with engine.connect() as conn:
        kept = conn.scalar(
            sa.text("SELECT count(*) FROM idempotency_keys WHERE ingestion_id = ANY(CAST(:i AS uuid[]))"),
            {"i": [first.get_json()["ingestion_id"], again.get_json()["ingestion_id"]]},
        )
    assert kept == 0


def expire(engine: sa.Engine, key: str) -> None:
    """The key's answer expired (as if ETL_IDEMPOTENCY_TTL_SECONDS had passed)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = :k"), {"k": key}
        )


def test_a_key_is_kept_for_the_configured_time_and_is_free_once_expired(make_app, auth, engine, unique):
    client = make_app(idempotency_ttl_seconds=3600).test_client()
    key = f"ttl-{unique}"
    first = client.post("/api/v1/students", json=student(f"{unique}-1"), headers=keyed(auth, key))
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT created_at, expires_at FROM idempotency_keys WHERE key = :k"), {"k": key})
        row = kept.one()
    assert row.expires_at - row.created_at == timedelta(seconds=3600)
    expire(engine, key)
    reused = client.post("/api/v1/students", json=student(f"{unique}-2"), headers=keyed(auth, key))
    assert reused.status_code == 202 and "Idempotent-Replayed" not in reused.headers
    assert reused.get_json()["ingestion_id"] != first.get_json()["ingestion_id"]
    again = client.post("/api/v1/students", json=student(f"{unique}-2"), headers=keyed(auth, key))
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_data() == reused.get_data()


def test_the_retention_job_deletes_expired_keys_in_batches_and_keeps_live_ones(client, auth, engine, unique):
    keys = [f"ret-{unique}-{i}" for i in range(5)]
    for i, key in enumerate(keys):
        assert (
            client.post("/api/v1/students", json=student(f"{unique}-{i}"), headers=keyed(auth, key)).status_code == 202
        )
    for key in keys[:4]:
        expire(engine, key)
    settings = Settings(database_url=str(engine.url), job_batch_size=2)
    outcome = run_job(engine, "retention", trigger="cli", settings=settings)
    assert outcome.status == "succeeded" and outcome.rows >= 4
    with engine.connect() as conn:
        left = conn.scalars(sa.text("SELECT key FROM idempotency_keys WHERE key = ANY(:k)"), {"k": keys}).all()
    assert left == [keys[4]]


def test_concurrent_requests_with_one_key_store_one_ingestion_and_all_get_its_answer(client, auth, engine, unique):
    key = f"race-{unique}"
    records = [student(f"{unique}-{i}") for i in range(3)]
    barrier = threading.Barrier(8)

    def send(_):
        barrier.wait()
        r = client.post("/api/v1/students/batch", json=records, headers=keyed(auth, key))
        return r.status_code, r.get_data(), r.headers.get("Idempotent-Replayed")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert {status for status, _, _ in answers} == {202}
    assert len({body for _, body, _ in answers}) == 1
    assert sorted(str(replayed) for _, _, replayed in answers) == ["None"] + ["true"] * 7
    assert len(ingestions_of(engine, [r["student_id"] for r in records])) == 1
    assert all(raw_count(engine, r["student_id"]) == 1 for r in records)


def _held_claim(engine: sa.Engine, key: str, body: str, fingerprint: str):
    """A transaction of another request that claimed ``key`` and has not ended: (conn, claim)."""
    conn = engine.connect()
    now = utcnow()
    claim = idempotency.Claim(
        key_id(API_KEY),
        key,
        fingerprint,
        uuid.uuid4(),
        202,
        body,
        now,
        now + timedelta(hours=1),
    )
    idempotency.claim(conn, claim)
    return conn, claim


def _waiting_on_a_lock(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE '%idempotency_keys%'"
                )
            )
        )


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_request_meeting_its_key_still_being_stored_waits_for_the_outcome(client, auth, engine, unique, outcome):
    """The other request commits: this one answers what it stored (stores nothing). It rolls
    back: this one does the work."""
    key = f"held-{unique}"
    payload = student(unique)
    probe = client.post("/api/v1/students", json=payload, headers=keyed(auth, f"probe-{unique}"))
    assert probe.status_code == 202
    with engine.connect() as conn:
        fingerprint = conn.scalar(
            sa.text("SELECT fingerprint FROM idempotency_keys WHERE key = :k"), {"k": f"probe-{unique}"}
        )
    held_body = '{"ingestion_id":"00000000-0000-4000-8000-000000000000","accepted":1,"rejected":0}'
    conn, _ = _held_claim(engine, key, held_body, fingerprint)
    answers = []
    sender = threading.Thread(
        target=lambda: answers.append(client.post("/api/v1/students", json=payload, headers=keyed(auth, key)))
    )
    try:
        sender.start()
        wait_until(lambda: _waiting_on_a_lock(engine), 30, what="the request to wait on the key")
        assert not answers  # still waiting
    finally:
        conn.commit() if outcome == "commit" else conn.rollback()
        conn.close()
        sender.join(60)
    (answer,) = answers
    assert answer.status_code == 202
    if outcome == "commit":
        assert answer.headers["Idempotent-Replayed"] == "true" and answer.get_data().decode() == held_body
        assert raw_count(engine, unique) == 1  # the probe's only
    else:
        assert "Idempotent-Replayed" not in answer.headers
        assert raw_count(engine, unique) == 2  # the probe's and this one's


def test_an_upload_sent_again_with_its_key_is_stored_once(client, auth, engine, unique):
    data = f"student_id,name\n{unique}-1,Ann\n{unique}-2,Bo\n".encode()
    key = f"upload-{unique}"

    def upload(content: bytes):
        return client.post(
            "/api/v1/students/upload",
            data={"file": (io.BytesIO(content), "students.csv", "text/csv")},
            headers=keyed(auth, key),
            content_type="multipart/form-data",
        )

    first, again = upload(data), upload(data)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_data() == first.get_data()
    ingestion_id = first.get_json()["ingestion_id"]
    assert first.get_json()["upload"]["size"] == len(data)
    with engine.connect() as conn:
        stored = conn.scalars(
            sa.text("SELECT id FROM uploads WHERE sha256 = :s"), {"s": hashlib.sha256(data).hexdigest()}
        ).all()
        pieces = conn.scalar(sa.text("SELECT count(*) FROM upload_chunks WHERE upload_id = :i"), {"i": ingestion_id})
    assert [str(i) for i in stored] == [ingestion_id] and pieces == 1  # the file stored once
    other = upload(data + f"{unique}-3,Cy\n".encode())
    assert other.status_code == 422 and other.get_json()["error"] == "idempotency_key_reused"


def test_the_openapi_document_names_the_header_and_its_answers_on_every_submit_and_upload(client, auth):
    spec = client.get("/openapi.json", headers=auth).get_json()
    submits = [
        (path, ops["post"])
        for path, ops in spec["paths"].items()
        if "post" in ops and re.fullmatch(r"/api/v1/(tutors|students|sessions|feedback)(/batch|/upload)?", path)
    ]
    assert len(submits) == 12
    for path, operation in submits:
        (header,) = [p for p in operation["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key" and header["schema"]["maxLength"] == 255, path
        assert "Idempotent-Replayed" in operation["responses"]["202"]["headers"], path
        assert {"400", "409", "422"} <= set(operation["responses"]), path
        assert "Idempotency-Key" in operation["responses"]["422"]["description"], path
    others = [op for path, ops in spec["paths"].items() if path not in dict(submits) for op in ops.values()]
    assert not any(p.get("in") == "header" for op in others for p in op.get("parameters", []))
