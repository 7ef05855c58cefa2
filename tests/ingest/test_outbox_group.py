"""Single records stored by concurrent requests share statements (etl_app.ingest.outbox with
etl_app.ingest.group_commit): each record is stored once, with its own ingestion, ids and time,
and a record PostgreSQL refuses fails only its own request."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa

from etl_app import db
from etl_app.ingest import outbox
from etl_app.record_types import get_registry

from tests.helpers.payloads import student, tutor

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def params(record_type: str, payload: dict, at: datetime, relayed: bool = True) -> dict:
    rt = get_registry()[record_type]
    return {
        "id": uuid.uuid4(),
        "t": rt.name,
        "source": "api",
        "at": at,
        "key": rt.natural_key(payload),
        "payload": outbox._jsonb(payload),
        "enqueued_at": None if relayed else at,
    }


def stored(engine: sa.Engine, ingestion_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT i.id, r.id, i.record_type, r.record_type, i.source, i.accepted, i.rejected, r.natural_key, "
                "r.payload, r.status, i.created_at, r.received_at, r.updated_at, r.enqueued_at "
                "FROM ingestions i JOIN raw_records r ON r.ingestion_id = i.id WHERE i.id = ANY(:ids)"
            ),
            {"ids": ingestion_ids},
        ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_a_group_stores_each_record_with_its_own_ingestion_type_and_time(engine, unique):
    group = [
        params("students", student(f"{unique}-s"), AT),
        params("tutors", tutor(f"{unique}-t"), AT + timedelta(seconds=1), relayed=False),
        params("students", student(f"{unique}-s2"), AT + timedelta(seconds=2)),
    ]
    ids = outbox._write_group(engine, group)
    assert len(ids) == 3 and all(isinstance(i, int) for i in ids)
    rows = stored(engine, [p["id"] for p in group])
    for p, raw_id in zip(group, ids, strict=True):
        at = p["at"]
        raw, i_type, r_type, source, accepted, rejected, key, payload, status, created, received, updated, enqueued = (
            rows[p["id"]]
        )
        assert (raw, i_type, r_type, source, accepted, rejected, key) == (raw_id, p["t"], p["t"], "api", 1, 0, p["key"])
        assert payload == outbox.orjson.loads(p["payload"])
        assert (status, created, received, updated, enqueued) == ("received", at, at, at, p["enqueued_at"])


def test_a_record_postgresql_refuses_fails_alone_and_the_rest_of_its_group_is_stored(engine, unique):
    good = [params("students", student(f"{unique}-{i}"), AT) for i in range(3)]
    bad = params("students", student(f"{unique}-bad", name="nul \u0000 here"), AT)  # jsonb holds no \u0000
    outcomes = outbox._write_group(engine, [good[0], bad, good[1], good[2]])
    assert isinstance(outcomes[1], psycopg.Error)
    assert all(isinstance(outcomes[i], int) for i in (0, 2, 3))
    rows = stored(engine, [p["id"] for p in [*good, bad]])
    assert set(rows) == {p["id"] for p in good}


def test_concurrent_single_records_share_statements_and_each_is_stored_exactly_once(engine, unique, monkeypatch):
    sizes: list[int] = []
    real = outbox._write_group
    first_started, release = threading.Event(), threading.Event()

    def write_group(engine_, group):
        sizes.append(len(group))
        if len(sizes) == 1:  # hold the first write, so that the others queue behind it
            first_started.set()
            assert release.wait(10)
        return real(engine_, group)

    monkeypatch.setattr(outbox, "_write_group", write_group)
    monkeypatch.setattr(outbox, "_groups", outbox.weakref.WeakKeyDictionary())
    record_type = get_registry()["students"]
    results: dict[int, object] = {}

    def submit(i: int) -> None:
        try:
            results[i] = outbox.store_and_commit(
                engine, record_type, [student(f"{unique}-{i}")], source="api", received_at=AT, relayed=True
            )
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=submit, args=(0,))]
    threads[0].start()
    assert first_started.wait(10)
    threads += [threading.Thread(target=submit, args=(i,)) for i in range(1, 9)]
    for thread in threads[1:]:
        thread.start()
    group = outbox._group_of(engine)._group
    for _ in range(1000):
        with group._lock:
            if len(group._queue) == 8:
                break
        threading.Event().wait(0.005)
    release.set()
    for thread in threads:
        thread.join(10)
    assert sizes == [1, 8]  # the eight that arrived during the first write: one statement
    accepted = [results[i] for i in range(9)]
    assert all(isinstance(a, outbox.Accepted) and a.accepted == 1 for a in accepted), accepted
    rows = stored(engine, [a.ingestion_id for a in accepted])
    assert len(rows) == 9
    for i, a in enumerate(accepted):
        assert rows[a.ingestion_id][0] == a.ids[0]
        assert rows[a.ingestion_id][6] == f"{unique}-{i}"
    assert len({a.ids[0] for a in accepted}) == 9


@pytest.mark.parametrize("size", [1, 3])
def test_a_group_on_a_connection_that_died_fails_whole_and_the_next_one_is_stored(
    database_url, engine, unique, size, monkeypatch
):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600)  # no ping: the statement finds it dead
    name = f"group-{unique}-{size}"
    own = db.make_engine(database_url, pool_size=1, max_overflow=0, application_name=name)
    try:
        outbox._write_group(own, [params("students", student(f"{unique}-{size}-warm"), AT)])  # pooled now
        with engine.begin() as conn:
            ended = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE application_name = :n"
                ),
                {"n": name},
            ).scalar()
        assert ended == 1
        group = [params("students", student(f"{unique}-{size}-{i}"), AT) for i in range(size)]
        with pytest.raises(psycopg.OperationalError):
            outbox._write_group(own, group)
        assert stored(engine, [p["id"] for p in group]) == {}
        outcomes = outbox._write_group(own, group)  # on a new connection: the dead one was thrown away
        assert all(isinstance(o, int) for o in outcomes)
        assert len(stored(engine, [p["id"] for p in group])) == size
    finally:
        own.dispose()
