"""The outbox's COPY of accepted records (etl_app.ingest.outbox.copy_records, binary format):
every column holds what the record and its batch gave, whatever the key and payload contain."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from etl_app.ingest import outbox
from etl_app.record_types import get_registry

from tests.helpers.payloads import student

AT = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)

# keys and values PostgreSQL's text COPY would need escaped, and text beyond ASCII
AWKWARD = ["tab\there", "new\nline", "back\\slash", "cr\rret", 'quote"d', "ünïcødé ✓ 𝄞", "\\N"]


def payloads(unique: str) -> list[dict]:
    out = [student(f"{unique}-{i}{text}", name=text, notes={"x": [text, None, 1.5]}) for i, text in enumerate(AWKWARD)]
    out.append({"name": "no key at all"})  # no natural key: NULL
    out.append(student(f"  {unique}-pad  "))  # the key as the record type reads it (stripped)
    out.extend(student(f"{unique}-n{i}") for i in range(70))
    return out


def rows_of(conn: sa.Connection, ids: list[int]) -> list[tuple]:
    return conn.execute(
        sa.text(
            "SELECT id, ingestion_id, record_type, natural_key, payload, status, received_at, updated_at, "
            "enqueued_at, source_row, attempts FROM raw_records WHERE id = ANY(:ids) ORDER BY id"
        ),
        {"ids": ids},
    ).all()


def add_upload(conn: sa.Connection, upload_id: uuid.UUID) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO ingestions (id, record_type, source, accepted, rejected, created_at) "
            "VALUES (:id, 'students', 'upload', 0, 0, :at)"
        ),
        {"id": upload_id, "at": AT},
    )


@pytest.mark.parametrize("relayed", [False, True])
def test_a_batch_is_copied_with_each_records_key_and_payload_and_the_batchs_columns(engine, unique, relayed):
    rt = get_registry()["students"]
    sent = payloads(unique)
    with engine.begin() as conn:
        accepted = outbox.store(conn, rt, sent, source="api", received_at=AT, rejections=(), relayed=relayed)
        rows = rows_of(conn, accepted.ids)
    assert [r[0] for r in rows] == accepted.ids and len(rows) == len(sent)
    for row, payload in zip(rows, sent, strict=True):
        assert row[1:] == (
            accepted.ingestion_id,
            "students",
            rt.natural_key(payload),
            payload,
            "received",
            AT,
            AT,
            None if relayed else AT,
            None,
            0,
        )
    assert rows[len(AWKWARD)][3] is None


def test_an_uploads_rows_keep_their_source_rows_across_blocks(engine, unique, monkeypatch):
    monkeypatch.setattr(outbox, "_COPY_BLOCK", 2)  # several blocks, one ending on a row's last field
    rt = get_registry()["students"]
    sent = payloads(unique)[:9]
    source_rows = [3, 5, 8, 13, 21, 34, 55, 89, 2**40]
    upload_id = uuid.uuid4()
    enqueued = AT + timedelta(seconds=3)
    with engine.begin() as conn:
        add_upload(conn, upload_id)
        ids = outbox.new_ids(conn, len(sent))
        outbox.copy_records(
            conn, ids, upload_id, rt, sent, received_at=AT, enqueued_at=enqueued, source_rows=source_rows
        )
        rows = rows_of(conn, ids)
    assert [(r[0], r[3], r[4], r[8], r[9]) for r in rows] == [
        (i, rt.natural_key(p), p, enqueued, n) for i, p, n in zip(ids, sent, source_rows, strict=True)
    ]


def test_a_naive_time_is_taken_as_utc_and_an_empty_batch_copies_nothing(engine, unique):
    rt = get_registry()["students"]
    upload_id = uuid.uuid4()
    with engine.begin() as conn:
        add_upload(conn, upload_id)
        outbox.copy_records(conn, [], upload_id, rt, [], received_at=AT, enqueued_at=None)
        ids = outbox.new_ids(conn, 1)
        naive = AT.replace(tzinfo=None)
        outbox.copy_records(conn, ids, upload_id, rt, [student(unique)], received_at=naive, enqueued_at=naive)
        rows = rows_of(conn, ids)
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM raw_records WHERE ingestion_id = :id"), {"id": upload_id}
            ).scalar()
            == 1
        )
    assert rows[0][6:9] == (AT, AT, AT)


def test_ids_payloads_and_source_rows_of_different_lengths_are_refused(engine, unique):
    rt = get_registry()["students"]
    with engine.begin() as conn, pytest.raises(ValueError):
        outbox.copy_records(conn, [1, 2], uuid.uuid4(), rt, [student(unique)], received_at=AT, enqueued_at=None)


def test_new_ids_are_distinct_and_ascending_and_none_are_asked_for_nothing(engine):
    with engine.begin() as conn:
        first, second = outbox.new_ids(conn, 500), outbox.new_ids(conn, 3)
        assert outbox.new_ids(conn, 0) == []
    assert len(first) == 500 and first == sorted(set(first)) and first[-1] < second[0] < second[1] < second[2]
