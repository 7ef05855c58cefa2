"""Records waiting for their parents: the list, and giving up on them now (the API, the command
line and the domain functions on the real database; no worker). The exactly-once rule against a
chain persisting the same record at that moment is checked with two real transactions."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from etl_app.db import make_engine
from etl_app.dead_letters import actions, waiting
from etl_app.pipeline.persist import persist_chunk
from etl_app.record_types import get_registry
from etl_app.roles import key_id

from tests.helpers.dead_letters import enriched_chunk, land, make_wait, raw_row, store
from tests.helpers.payloads import feedback, session, student, tutor
from tests.helpers.procs import wait_until
from tests.helpers.support import API_KEY, fresh_database

REGISTRY = get_registry()


def waiting_sessions(engine: sa.Engine, unique: str, n: int = 1, tutor_id: str | None = None):
    accepted = store(
        engine, "sessions", [session(f"{unique}-S{i}", tutor_id or f"{unique}-T", f"{unique}-ST") for i in range(n)]
    )
    make_wait(engine, "sessions", accepted.ids)
    return accepted


def dead_letters_of(engine: sa.Engine, raw_ids: Sequence[int]) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT * FROM dead_letters WHERE raw_record_id = ANY(:ids) ORDER BY raw_record_id"),
            {"ids": list(raw_ids)},
        ).all()


def give_up(client, auth, body):
    return client.post("/api/v1/waiting/give-up", json=body, headers=auth)


# -- the API ---------------------------------------------------------------------------------------


def test_giving_up_on_an_ingestion_dead_letters_its_waiting_records_naming_who_and_when(client, auth, engine, unique):
    mine = waiting_sessions(engine, unique, n=2)
    other = waiting_sessions(engine, f"{unique}-o")

    listed = client.get("/api/v1/waiting", query_string={"ingestion_id": str(mine.ingestion_id)}, headers=auth)
    assert listed.status_code == 200
    body = listed.get_json()
    assert body["total"] == 2 and body["more"] is False
    [group] = body["groups"]
    assert (group["ingestion_id"], group["record_type"], group["waiting"], group["parents"]) == (
        str(mine.ingestion_id),
        "sessions",
        2,
        1,
    )

    r = give_up(client, auth, {"ingestion_id": str(mine.ingestion_id)})
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"given_up": 2, "remaining": 0}

    dead = dead_letters_of(engine, mine.ids)
    assert [d.error_type for d in dead] == ["missing_parent", "missing_parent"]
    for d in dead:
        assert d.error.startswith(f"parent tutors:{unique}-T not found: given up by '{key_id(API_KEY)}' at 20")
        assert d.status == "open" and d.task_name == "give_up"
        assert raw_row(engine, d.raw_record_id).status == "dead"
    # the same cause whoever gives up, and whatever the key: one group
    assert len({d.cause for d in dead}) == 1 and "<key>" in dead[0].cause
    # the other ingestion still waits
    assert raw_row(engine, other.ids[0]).status == "received"
    again = client.get("/api/v1/waiting", query_string={"ingestion_id": str(mine.ingestion_id)}, headers=auth)
    assert again.get_json() == {"total": 0, "groups": [], "more": False}

    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT key_id, target, count, outcome FROM audit WHERE action = 'give_up' ORDER BY id DESC LIMIT 1"
            )
        ).one()
    assert tuple(row) == (key_id(API_KEY), {"ingestion_id": str(mine.ingestion_id)}, 2, "ok")


def test_giving_up_on_one_record_leaves_its_siblings_waiting(client, auth, engine, unique):
    accepted = waiting_sessions(engine, unique, n=2)
    # an empty or bad ingestion id is refused, never read as "every ingestion"
    for bad in ("", "nope"):
        refused = client.get("/api/v1/waiting", query_string={"ingestion_id": bad}, headers=auth)
        assert refused.status_code == 400 and refused.get_json()["parameter"] == "ingestion_id"
    r = give_up(client, auth, {"record": {"type": "sessions", "key": f"{unique}-S1"}})
    assert r.get_json() == {"given_up": 1, "remaining": 0}
    assert [raw_row(engine, i).status for i in accepted.ids] == ["received", "dead"]
    # a record that does not wait: nothing to do, said so
    assert give_up(client, auth, {"record": {"type": "sessions", "key": f"{unique}-S1"}}).get_json() == {
        "given_up": 0,
        "remaining": 0,
    }


@pytest.mark.parametrize(
    ("body", "error", "parameter"),
    [
        ({}, "filter_required", None),
        ({"record_type": "sessions", "ingestion_id": str(uuid.uuid4())}, "filter_required", None),
        ({"record_type": ""}, "filter_required", None),
        ({"record_type": "nope"}, "invalid_parameter", "record_type"),
        ({"ingestion_id": "not-a-uuid"}, "invalid_parameter", "ingestion_id"),
        ({"record": {"type": "sessions"}}, "invalid_parameter", "record"),
        ({"record": "sessions:S0"}, "invalid_parameter", "record"),
        ({"record": {"type": "sessions", "key": "S\x000"}}, "invalid_parameter", "record"),  # NUL: a 400, not a 500
        ({"ingestion_id": str(uuid.uuid4()), "record": None}, "invalid_parameter", "record"),  # null is not absent
        ({"record": {"type": "sessions", "key": "S" * 1001}}, "invalid_parameter", "record"),
        ({"everything": True}, "invalid_parameter", "everything"),
    ],
)
def test_give_up_needs_exactly_one_valid_selector_and_changes_nothing_otherwise(
    client, auth, engine, unique, body, error, parameter
):
    accepted = waiting_sessions(engine, unique)
    r = give_up(client, auth, body)
    assert r.status_code == 400
    assert (r.get_json()["error"], r.get_json()["parameter"]) == (error, parameter)
    assert raw_row(engine, accepted.ids[0]).status == "received"


def test_a_given_up_record_is_replayed_by_hand_not_when_its_parent_lands(client, auth, engine, unique):
    accepted = waiting_sessions(engine, unique)
    assert give_up(client, auth, {"record": {"type": "sessions", "key": f"{unique}-S0"}}).get_json()["given_up"] == 1
    [dl] = dead_letters_of(engine, accepted.ids)
    # its parents land: the persist's wake-up leaves it alone (the operator gave up on it)
    land(engine, "students", [student(f"{unique}-ST")])
    land(engine, "tutors", [tutor(f"{unique}-T")])
    with engine.begin() as conn:
        assert actions.replay_children(conn, "tutors", [f"{unique}-T"]).count == 0
        assert actions.replay_if_parents_exist(conn, REGISTRY, accepted.ids).count == 0
    assert raw_row(engine, accepted.ids[0]).status == "dead"
    # ... and replays as any dead letter when asked
    r = client.post(f"/api/v1/dead-letters/{dl.id}/replay", headers=auth)
    assert r.status_code == 202
    chunk = enriched_chunk(engine, "sessions", accepted.ids)
    with engine.begin() as conn:
        assert persist_chunk(conn, REGISTRY["sessions"], chunk["items"]) == [f"{unique}-S0"]


# -- exactly once against a persist of the same record ----------------------------------------------


def _child_ready_to_persist(engine, unique):
    """A session that waited, whose parents have just landed: its chain is about to persist it."""
    accepted = waiting_sessions(engine, unique)
    land(engine, "students", [student(f"{unique}-ST")])
    land(engine, "tutors", [tutor(f"{unique}-T")])
    return accepted, enriched_chunk(engine, "sessions", accepted.ids)["items"]


def _stored(engine, key: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM sessions WHERE session_id = :k"), {"k": key}).scalar_one()


def test_a_record_being_persisted_when_given_up_lands_and_is_not_dead_lettered(engine, unique):
    accepted, items = _child_ready_to_persist(engine, unique)
    selector = waiting.Selector(record_type="sessions", key=f"{unique}-S0")
    with engine.connect() as persisting:
        with persisting.begin():
            assert persist_chunk(persisting, REGISTRY["sessions"], items) == [f"{unique}-S0"]
            with engine.begin() as conn:  # the persist holds the record: skipped
                given = waiting.give_up(conn, selector, who="tester")
            assert given.count == 0
    assert raw_row(engine, accepted.ids[0]).status == "persisted"
    assert dead_letters_of(engine, accepted.ids) == [] and _stored(engine, f"{unique}-S0") == 1


def test_a_record_given_up_while_its_persist_waits_is_dead_lettered_and_never_stored(engine, unique):
    accepted, items = _child_ready_to_persist(engine, unique)
    selector = waiting.Selector(record_type="sessions", key=f"{unique}-S0")
    outcome: dict[str, object] = {}
    with engine.connect() as giving_up:
        tx = giving_up.begin()
        assert waiting.give_up(giving_up, selector, who="tester").count == 1
        other = make_engine(str(engine.url.render_as_string(hide_password=False)), pool_size=1)
        with other.connect() as persisting:
            pid = persisting.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            persisting.commit()

            def persist() -> None:
                with persisting.begin():
                    outcome["keys"] = persist_chunk(persisting, REGISTRY["sessions"], items)

            thread = threading.Thread(target=persist)
            thread.start()

            def blocked() -> bool:  # the persist waits for the give-up's lock on the record
                with engine.connect() as conn:
                    event = conn.execute(
                        sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                    ).scalar()
                return event == "Lock"

            wait_until(blocked, 30, what="the persist to wait for the record's lock")
            tx.commit()
            thread.join(30)
        other.dispose()
    assert outcome["keys"] == []  # the persist found the record dead and wrote nothing
    assert raw_row(engine, accepted.ids[0]).status == "dead"
    [dl] = dead_letters_of(engine, accepted.ids)
    assert (dl.error_type, dl.status) == ("missing_parent", "open")
    assert _stored(engine, f"{unique}-S0") == 0


# -- by record type (a database of its own: it would take other tests' waiting records) -------------


def test_giving_up_on_a_record_type_takes_only_that_type(unique):
    with fresh_database(f"give_up_{uuid.uuid4().hex[:8]}") as url:
        engine = make_engine(url, pool_size=1)
        try:
            sessions = waiting_sessions(engine, unique, n=3)
            orphan = feedback(f"{unique}-F", f"{unique}-NOSESSION", f"{unique}-T", f"{unique}-ST")
            fb = store(engine, "feedback", [orphan])
            make_wait(engine, "feedback", fb.ids)
            with engine.begin() as conn:
                given = waiting.give_up(conn, waiting.Selector(record_type="sessions"), who="tester", cap=2)
            assert (given.count, given.remaining) == (2, 1)  # bounded: the oldest first, the rest said
            with engine.connect() as conn:
                listed = waiting.list_waiting(conn)
            assert listed["total"] == 2
            assert sorted((g["record_type"], g["waiting"]) for g in listed["groups"]) == [
                ("feedback", 1),
                ("sessions", 1),
            ]
            assert [raw_row(engine, i).status for i in sessions.ids] == ["dead", "dead", "received"]
        finally:
            engine.dispose()


# -- the command line --------------------------------------------------------------------------------


def test_the_command_line_lists_waiting_records_and_gives_up_on_one(make_cli, engine, unique):
    accepted = waiting_sessions(engine, unique, n=2)
    cli = make_cli()
    listed = cli("waiting", "list", "--ingestion", str(accepted.ingestion_id))
    assert listed.exit_code == 0, listed.output
    assert "sessions" in listed.output and "2 records waiting for their parents" in listed.output
    done = cli("waiting", "give-up", "--record", f"sessions:{unique}-S0")
    assert done.exit_code == 0, done.output
    assert "gave up on 1 waiting records" in done.output
    [dl] = dead_letters_of(engine, accepted.ids)
    assert "given up by 'cli'" in dl.error
    refused = cli("waiting", "give-up", "--ingestion", str(accepted.ingestion_id), "--type", "sessions")
    assert refused.exit_code == 2 and "exactly one of --ingestion, --type, --record" in refused.output
    assert raw_row(engine, accepted.ids[1]).status == "received"


# -- the OpenAPI document ------------------------------------------------------------------------------


def test_the_openapi_document_describes_what_waits_and_the_give_up_with_its_one_selector(client, auth):
    spec = client.get("/openapi.json", headers=auth).get_json()

    def resolved(schema: dict) -> dict:
        return spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema

    listed = spec["paths"]["/api/v1/waiting"]["get"]
    assert [p["name"] for p in listed["parameters"]] == ["ingestion_id"]
    page = resolved(listed["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(page["properties"]) == {"total", "groups", "more"}
    give_up_op = spec["paths"]["/api/v1/waiting/give-up"]["post"]
    body = resolved(give_up_op["requestBody"]["content"]["application/json"]["schema"])
    assert [rule["required"] for rule in body["oneOf"]] == [["ingestion_id"], ["record_type"], ["record"]]
    assert body["additionalProperties"] is False
    assert {"200", "400"} <= set(give_up_op["responses"])
    answer = resolved(give_up_op["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(answer["properties"]) == {"given_up", "remaining"}


@pytest.mark.unit
def test_a_given_up_error_says_who_when_in_utc_and_how_long_and_groups_with_every_other():
    from datetime import datetime, timedelta, timezone

    from etl_app.dead_letters.causes import normalise

    at = datetime(2026, 12, 7, 6, 0, tzinfo=timezone(timedelta(hours=1)))
    error = waiting.given_up_error("tutors:T1", "k-1a2b3c4d", at, at - timedelta(seconds=42))
    assert error == "parent tutors:T1 not found: given up by 'k-1a2b3c4d' at 2026-12-07T05:00:00Z after waiting 42s"
    other = waiting.given_up_error("tutors:T2", "cli", at, None)
    cause = "parent tutors:<key> not found: given up by '<v>' at <ts> after waiting <n>s"
    assert normalise(error, ("tutors",)) == cause
    assert other == "parent tutors:T2 not found: given up by 'cli' at 2026-12-07T05:00:00Z"
