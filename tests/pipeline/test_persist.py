"""persist_chunk on the real database: idempotent, last record wins, survives a rolled-back first use;
the rows document enrich stashes for persist."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
import sqlalchemy as sa

from etl_app.db import make_engine
from etl_app.pipeline import persist as persist_module
from etl_app.pipeline.messages import chunk_message
from etl_app.pipeline.persist import persist_chunk, row_columns, rows_document
from etl_app.record_types import get_registry

from tests.helpers.dead_letters import enriched_chunk, land, store
from tests.helpers.payloads import session, student, tutor


def test_a_rolled_back_first_persist_does_not_break_the_connection(database_url, engine, unique):
    """The staging table is created inside the transaction; a rollback must not leave the
    connection believing it exists (every later persist on it would fail)."""
    one = make_engine(database_url, pool_size=1, max_overflow=0)
    rt = get_registry()["students"]
    accepted = store(engine, "students", [student(unique, name="kept")])
    items = enriched_chunk(engine, "students", accepted.ids)["items"]
    try:
        with one.begin() as conn:
            persist_chunk(conn, rt, items)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with one.begin() as conn:
        assert persist_chunk(conn, rt, items) == [unique]
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT name FROM students WHERE student_id = :k"), {"k": unique}).scalar() == "kept"
        )
    one.dispose()


def test_persisting_the_same_chunk_twice_changes_nothing_the_second_time(engine, unique):
    rt = get_registry()["students"]
    accepted = store(engine, "students", [student(unique)])
    items = enriched_chunk(engine, "students", accepted.ids)["items"]
    with engine.begin() as conn:
        assert persist_chunk(conn, rt, items) == [unique]
    with engine.begin() as conn:
        assert persist_chunk(conn, rt, items) == []  # already settled: skipped
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT raw_record_id FROM students WHERE student_id = :k"), {"k": unique}).all()
    assert rows == [(accepted.ids[0],)]


def test_of_two_records_of_one_key_the_later_wins_whichever_commits_last(engine, unique):
    rt = get_registry()["students"]
    accepted = store(engine, "students", [student(unique, name="first"), student(unique, name="second")])
    first, second = (enriched_chunk(engine, "students", [i])["items"] for i in accepted.ids)
    with engine.begin() as conn:
        persist_chunk(conn, rt, second)
    with engine.begin() as conn:
        persist_chunk(conn, rt, first)  # same received_at, earlier raw record: loses
    with engine.connect() as conn:
        name = conn.execute(sa.text("SELECT name FROM students WHERE student_id = :k"), {"k": unique}).scalar()
    assert name == "second"


def test_chunk_values_wait_in_the_stash_and_a_lost_stash_sends_the_records_through_again(
    make_app, engine, unique, api_redis_url, broker_prefix
):
    """Messages carry ids and a stash key; if Redis lost the values, persist re-drives the ids."""
    from tests.helpers.support import queue_length

    app = make_app()
    runtime = app.extensions["etl"]
    accepted = store(engine, "students", [student(unique)])
    chunk = enriched_chunk(engine, "students", accepted.ids, stash=runtime.stash)
    assert runtime.cache.exists(chunk["stash"])
    runtime.cache.delete(chunk["stash"])  # as after a Redis restart
    persist = app.extensions["celery"].tasks["etl.persist"]
    assert persist.apply(args=({k: chunk[k] for k in ("type", "ids", "stash")},)).get() == 0
    assert queue_length(api_redis_url, broker_prefix) == 1  # a new chain for the record, from validate
    chunk = enriched_chunk(engine, "students", accepted.ids, stash=runtime.stash)
    assert persist.apply(args=({k: chunk[k] for k in ("type", "ids", "stash")},)).get() == 1
    assert not runtime.cache.exists(chunk["stash"])  # dropped once persisted


def test_a_persisted_row_holds_every_value_of_its_record_exactly(engine, unique):
    """The row is built by PostgreSQL from the chunk's values as the stash holds them: strings of
    any character, timestamps with their offsets, numbers, nulls and the lineage all land as the
    pipeline derived them."""
    land(engine, "tutors", [tutor(f"{unique}-t")])
    land(engine, "students", [student(f"{unique}-s", name='Zoë "Q" O\'Brien \\ 東京\n🙂', enrolled_on="2026-02-03")])
    payload = session(
        unique,
        f"{unique}-t",
        f"{unique}-s",
        subject='Math: "quoted" \\ back\\slash\ttab 🙂',
        engagement_score=0.1,
        learning_objectives_met=None,
    )
    accepted = store(engine, "sessions", [payload])
    items = enriched_chunk(engine, "sessions", accepted.ids)["items"]
    with engine.begin() as conn:
        assert persist_chunk(conn, get_registry()["sessions"], items) == [unique]
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM sessions WHERE session_id = :k"), {"k": unique}).mappings().one()
        name = conn.execute(sa.text("SELECT name, enrolled_on FROM students WHERE student_id = :k"),
                            {"k": f"{unique}-s"}).one()  # fmt: skip
    (item,) = items
    for column, value in item["data"].items():
        if column in row:
            assert row[column] == value, column
    assert row["subject"] == 'Math: "quoted" \\ back\\slash\ttab 🙂' and row["engagement_score"] == 0.1
    assert row["learning_objectives_met"] is None and row["late_start_minutes"] == 6
    assert (row["raw_record_id"], str(row["ingestion_id"])) == (item["id"], item["ingestion_id"])
    assert (row["received_at"], row["enriched_at"]) == (item["received_at"], item["enriched_at"])
    assert row["schema_version"] == get_registry()["sessions"].schema_version and row["persisted_at"] is not None
    assert tuple(name) == ('Zoë "Q" O\'Brien \\ 東京\n🙂', date(2026, 2, 3))


def test_enrich_stashes_for_persist_the_rows_it_reads(make_app, engine, unique):
    """enrich hands persist rows (values and lineage in one array each, in the order of
    ``row_columns``; ``rows`` set), which persist reads as they are."""
    app = make_app()
    runtime, tasks = app.extensions["etl"], app.extensions["celery"].tasks
    accepted = store(engine, "students", [student(unique, name="rows")])
    validated = tasks["etl.validate"].apply(args=(chunk_message("students", accepted.ids),)).get()
    enriched = tasks["etl.enrich"].apply(args=(validated,)).get()
    assert enriched["rows"] is True
    (values,) = orjson.loads(runtime.cache.get(enriched["stash"]))
    row = dict(zip(row_columns(get_registry()["students"]), values, strict=True))
    assert (row["raw_record_id"], row["student_id"], row["name"]) == (accepted.ids[0], unique, "rows")
    assert row["enriched_at"] is not None
    assert tasks["etl.persist"].apply(args=(enriched,)).get() == 1
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT name, raw_record_id FROM students WHERE student_id = :k"), {"k": unique})
        assert tuple(stored.one()) == ("rows", accepted.ids[0])


def test_a_persist_message_whose_stash_holds_items_is_persisted(make_app, engine, unique):
    """A persist message without ``rows`` (its enrich stashed items, as before rows) is converted
    and persisted all the same."""
    app = make_app()
    runtime = app.extensions["etl"]
    accepted = store(engine, "students", [student(unique, name="items")])
    chunk = enriched_chunk(engine, "students", accepted.ids, stash=runtime.stash)
    message = {k: chunk[k] for k in ("type", "ids", "stash")}
    assert "rows" not in message and "data" in orjson.loads(runtime.cache.get(chunk["stash"]))[0]
    assert app.extensions["celery"].tasks["etl.persist"].apply(args=(message,)).get() == 1
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT name, raw_record_id FROM students WHERE student_id = :k"), {"k": unique})
        assert tuple(stored.one()) == ("items", accepted.ids[0])


def test_a_row_takes_its_lineage_from_its_item_over_values_of_the_same_name():
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    item = {"id": 7, "ingestion_id": "i", "received_at": at, "waiting_since": None, "enriched_at": at,
            "data": {"name": "n", "raw_record_id": 99, "ingestion_id": "other", "received_at": None}}  # fmt: skip
    students = get_registry()["students"]
    (row,) = orjson.loads(rows_document(students, [item]))
    row = {c: v for c, v in zip(row_columns(students), row, strict=True) if v is not None}
    assert row == {"name": "n", "raw_record_id": 7, "ingestion_id": "i", "received_at": at.isoformat(),
                   "enriched_at": at.isoformat()}  # fmt: skip


def test_a_persist_message_whose_stash_holds_rows_as_objects_is_persisted(make_app, engine, unique):
    """Rows stashed as objects (by an enrich of an earlier version, during an upgrade) are read
    as arrays all the same."""
    app = make_app()
    runtime = app.extensions["etl"]
    accepted = store(engine, "students", [student(unique, name="objects")])
    chunk = enriched_chunk(engine, "students", accepted.ids)
    stash = runtime.stash.put_encoded(persist_module._objects_document(chunk["items"]))
    assert "name" in orjson.loads(runtime.cache.get(stash))[0]
    message = {"type": "students", "ids": chunk["ids"], "stash": stash, "rows": True}
    assert app.extensions["celery"].tasks["etl.persist"].apply(args=(message,)).get() == 1
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT name, raw_record_id FROM students WHERE student_id = :k"), {"k": unique})
        assert tuple(stored.one()) == ("objects", accepted.ids[0])
