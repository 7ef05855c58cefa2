"""Dead letters grouped by cause (etl_app.dead_letters.groups): the domain functions, the API and
the CLI, on the real database (no worker)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import orjson
import psycopg
import pytest
import sqlalchemy as sa

from etl_app.clock import utcnow
from etl_app.dead_letters import actions, groups
from etl_app.dead_letters.causes import normalise
from etl_app.dead_letters.errors import GroupNotFound, InvalidParameter
from etl_app.dead_letters.filters import Filters
from etl_app.roles import key_id

from tests.helpers.dead_letters import bury, dead_letter_row, raw_row, store
from tests.helpers.payloads import student, tutor
from tests.helpers.support import API_KEY, RUN_ID, fresh_database, queue_length

KEYS = {role: f"{role}-key-{uuid.uuid4().hex[:8]}" for role in ("ingest", "reader", "operator")}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def word(unique) -> str:
    """A word of this test's own (letters only: the normaliser keeps it), in its causes."""
    return unique.translate(str.maketrans("0123456789", "ghijklmnop"))


@pytest.fixture
def rclient(make_app):
    return make_app(api_keys=(API_KEY, *(f"{key}:{role}" for role, key in KEYS.items()))).test_client()


@pytest.fixture
def cli(make_cli):
    return make_cli()


def seeded(engine, unique, word):
    """One ingestion of students, dead-lettered with three causes and two error types:
    ``a`` (3, ids and numbers varying), ``b`` (2), ``c`` (1, another error type)."""
    accepted = store(engine, "students", [student(f"{unique}-{i}") for i in range(6)])
    ids = accepted.ids
    a = [
        bury(engine, [raw], error=f"grade {n} of '{unique}-{n}' refused by {word} at 2026-01-0{n}T10:00:00Z")[0]
        for raw, n in zip(ids[:3], (3, 5, 7), strict=True)
    ]
    b = bury(engine, ids[3:5], error=f"{word} said no to row {ids[3]} ({uuid.uuid4()})")
    c = bury(engine, ids[5:], error_type="internal", error=f"{word} said no to row {ids[5]} ({uuid.uuid4()})")
    return accepted, {"a": a, "b": b, "c": c}


def set_times(engine, dead_letter_ids, first_ago: timedelta, last_ago: timedelta) -> None:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE dead_letters SET first_failed_at = :first, last_failed_at = :last WHERE id = ANY(:ids)"),
            {"first": now - first_ago, "last": now - last_ago, "ids": list(dead_letter_ids)},
        )


def listed(engine, **filters):
    with engine.connect() as conn:
        return groups.list_groups(conn, Filters(**filters), limit=groups.MAX_LIMIT).items


def key_of(engine, dead_letter_id: int) -> str:
    return dead_letter_row(engine, dead_letter_id).group_key


def audit_rows(engine, action: str, group: str) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT * FROM audit WHERE action = :action AND target ->> 'group' = :group ORDER BY id"),
            {"action": action, "group": group},
        ).mappings()
        return [dict(r) for r in rows]


# -- writing: each dead letter gets its cause and group ------------------------------------------


def test_each_dead_letter_gets_its_cause_and_group_key_when_written(engine, unique, word):
    _, ids = seeded(engine, unique, word)
    rows = {name: [dead_letter_row(engine, i) for i in dl_ids] for name, dl_ids in ids.items()}
    assert {r.cause for r in rows["a"]} == {f"grade <n> of '<v>' refused by {word} at <ts>"}
    assert {r.cause for r in rows["b"]} == {f"{word} said no to row <n> (<id>)"}
    assert {r.cause for r in rows["c"]} == {f"{word} said no to row <n> (<id>)"}
    keys = {name: {r.group_key for r in group} for name, group in rows.items()}
    assert all(len(k) == 1 for k in keys.values()) and len(set().union(*keys.values())) == 3
    # the key is the record type, error type and cause hashed, as the models say
    r = rows["b"][0]
    digest = hashlib.md5(f"{r.record_type}\x1f{r.error_type}\x1f{r.cause}".encode()).hexdigest()[:16]
    assert r.group_key == digest


def test_a_record_failing_again_with_another_error_moves_to_that_group(engine, unique, word):
    accepted = store(engine, "students", [student(unique)])
    [dl_id] = bury(engine, accepted.ids, error=f"{word} first {1}")
    first = key_of(engine, dl_id)
    with engine.begin() as conn:
        actions.replay(conn, None, dl_id)
    bury(engine, accepted.ids, error_type="persistence", error=f"{word} then 'x' broke")
    row = dead_letter_row(engine, dl_id)
    assert row.status == "open" and row.cause == f"{word} then '<v>' broke" and row.group_key != first


# -- listing -------------------------------------------------------------------------------------


def test_groups_have_counts_first_and_last_seen_a_sample_and_hourly_arrivals(engine, unique, word):
    accepted, ids = seeded(engine, unique, word)
    a = ids["a"]
    set_times(engine, a[:1], timedelta(days=3), timedelta(hours=30))  # out of the chart's 24 hours
    set_times(engine, a[1:2], timedelta(days=2), timedelta(hours=2, minutes=1))
    set_times(engine, a[2:], timedelta(hours=5), timedelta(hours=2, minutes=2))
    got = listed(engine, ingestion_id=accepted.ingestion_id)
    assert [(g["record_type"], g["error_type"], g["count"]) for g in got] == [
        ("students", "validation", 3),
        ("students", "validation", 2),
        ("students", "internal", 1),
    ]
    top = got[0]
    rows = [dead_letter_row(engine, i) for i in a]
    assert top["id"] == rows[0].group_key and top["cause"] == rows[0].cause
    assert top["first_seen"] == min(r.first_failed_at for r in rows)
    assert top["last_seen"] == max(r.last_failed_at for r in rows)
    assert top["sample"] == {"id": a[2], "payload": rows[2].payload, "error": rows[2].error}
    counts = top["arrivals"]["counts"]
    assert top["arrivals"]["unit"] == "hour" and len(counts) == 24 and sum(counts) == 2
    start = top["arrivals"]["from"]
    assert start <= utcnow() - timedelta(hours=23)
    # the two failures of about two hours ago, each in the hour it fell in (they may straddle one)
    expected = [0] * 24
    for r in rows[1:]:
        expected[int((r.last_failed_at - start) // timedelta(hours=1))] += 1
    assert counts == expected and expected[19:22].count(0) <= 2
    assert got[1]["arrivals"]["counts"][-1] == 2  # just now: the current hour is the last
    assert got[2]["cause"] == got[1]["cause"] and got[2]["id"] != got[1]["id"]  # the error type tells them apart


def test_groups_of_open_dead_letters_by_default_filters_as_the_list(engine, unique, word):
    accepted, ids = seeded(engine, unique, word)
    with engine.begin() as conn:
        actions.discard(conn, ids["a"][0])
    ingestion = accepted.ingestion_id
    assert [g["count"] for g in listed(engine, ingestion_id=ingestion)] == [2, 2, 1]
    assert [g["count"] for g in listed(engine, ingestion_id=ingestion, status="discarded")] == [1]
    assert [g["count"] for g in listed(engine, ingestion_id=ingestion, status="all")] == [3, 2, 1]
    assert [g["count"] for g in listed(engine, ingestion_id=ingestion, error_type="internal")] == [1]
    assert listed(engine, ingestion_id=ingestion, record_type="tutors") == []
    assert listed(engine, ingestion_id=ingestion, since=utcnow() + timedelta(minutes=1)) == []


def test_groups_page_by_count_with_a_cursor(engine, unique, word):
    accepted, _ = seeded(engine, unique, word)
    filters = Filters(ingestion_id=accepted.ingestion_id)
    seen, cursor = [], None
    with engine.connect() as conn:
        while True:
            page = groups.list_groups(conn, filters, limit=2, cursor=groups.parse_cursor(cursor))
            seen.append([g["count"] for g in page.items])
            cursor = page.next
            if cursor is None:
                break
    assert seen == [[3, 2], [1]]
    with pytest.raises(InvalidParameter):
        groups.parse_cursor("3.nothex")


# -- acting --------------------------------------------------------------------------------------


def snapshot(engine, accepted):
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT d.*, r.status AS record_status FROM dead_letters d JOIN raw_records r "
                "ON r.id = d.raw_record_id WHERE d.ingestion_id = :i ORDER BY d.id"
            ),
            {"i": accepted.ingestion_id},
        ).all()


def test_a_dry_run_changes_nothing(engine, unique, word):
    accepted, ids = seeded(engine, unique, word)
    key = key_of(engine, ids["a"][0])
    before = snapshot(engine, accepted)
    with engine.begin() as conn:
        replay = groups.replay_group(conn, key, dry_run=True)
        capped = groups.replay_group(conn, key, dry_run=True, cap=2)
        discard = groups.discard_group(conn, key, None, dry_run=True)
    assert (replay.count, replay.remaining, replay.dry_run) == (3, 0, True)
    assert (capped.count, capped.remaining) == (2, 1)
    assert discard.count == 3 and replay.group["cause"] == dead_letter_row(engine, ids["a"][0]).cause
    assert snapshot(engine, accepted) == before


def test_replaying_a_group_replays_exactly_its_open_dead_letters(engine, unique, word):
    accepted, ids = seeded(engine, unique, word)
    with engine.begin() as conn:
        actions.discard(conn, ids["a"][0])
        done = groups.replay_group(conn, key_of(engine, ids["a"][1]), cap=1)
    assert (done.count, done.remaining) == (1, 1)
    with engine.begin() as conn:
        done2 = groups.replay_group(conn, key_of(engine, ids["a"][1]))
    assert (done2.count, done2.remaining) == (1, 0)
    assert sorted(done.replayed.dead_letter_ids + done2.replayed.dead_letter_ids) == ids["a"][1:]
    statuses = [dead_letter_row(engine, i).status for i in [*ids["a"], *ids["b"], *ids["c"]]]
    assert statuses == ["discarded", "replayed", "replayed", "open", "open", "open"]
    assert [raw_row(engine, i).status for i in accepted.ids] == ["dead", "received", "received", "dead", "dead", "dead"]


def test_discarding_a_group_needs_a_reason_and_keeps_the_records_dead(engine, unique, word):
    accepted, ids = seeded(engine, unique, word)
    key = key_of(engine, ids["b"][0])
    for reason in (None, "", "   ", 5):
        with engine.begin() as conn, pytest.raises(InvalidParameter, match="reason"):
            groups.discard_group(conn, key, reason)
    with engine.begin() as conn:
        done = groups.discard_group(conn, key, " a known bad export ")
    assert (done.count, done.remaining) == (2, 0)
    assert [dead_letter_row(engine, i).status for i in ids["b"]] == ["discarded", "discarded"]
    assert {raw_row(engine, i).status for i in accepted.ids} == {"dead"}
    assert [dead_letter_row(engine, i).status for i in ids["a"] + ids["c"]] == ["open"] * 4
    with engine.begin() as conn:  # again: nothing open is left, the group is still known
        assert groups.discard_group(conn, key, "again").count == 0


def test_an_unknown_group_is_not_found(engine):
    with engine.connect() as conn:
        for key in ("0000000000000000", "nope", "0" * 17, "ABCDEF0123456789"):
            with pytest.raises(GroupNotFound):
                groups.replay_group(conn, key, dry_run=True)


# -- the API -------------------------------------------------------------------------------------


def test_api_lists_groups_with_paging(rclient, engine, unique, word):
    accepted, ids = seeded(engine, unique, word)
    reader = bearer(KEYS["reader"])
    query = {"ingestion_id": str(accepted.ingestion_id), "limit": 2}
    r = rclient.get("/api/v1/dead-letters/groups", query_string=query, headers=reader)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert [g["count"] for g in body["groups"]] == [3, 2] and body["limit"] == 2
    first = body["groups"][0]
    assert first["id"] == key_of(engine, ids["a"][0]) and first["sample"]["id"] == ids["a"][2]
    assert set(first) == {
        "id", "record_type", "error_type", "cause", "count", "first_seen", "last_seen", "sample", "arrivals"
    }  # fmt: skip
    r = rclient.get("/api/v1/dead-letters/groups", query_string={**query, "cursor": body["next"]}, headers=reader)
    assert [g["count"] for g in r.get_json()["groups"]] == [1] and r.get_json()["next"] is None


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"cursor": "abc"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"record_type": ""}, "record_type"),
        ({"status": "nope"}, "status"),
        ({"group": "x"}, "group"),
    ],
)
def test_api_refuses_bad_list_parameters(rclient, params, parameter):
    r = rclient.get("/api/v1/dead-letters/groups", query_string=params, headers=bearer(KEYS["reader"]))
    assert r.status_code == 400 and r.get_json()["parameter"] == parameter


def test_api_replays_a_group_after_a_dry_run_and_audits_it(rclient, engine, unique, word, api_redis_url, broker_prefix):
    accepted, ids = seeded(engine, unique, word)
    key = key_of(engine, ids["a"][0])
    op = bearer(KEYS["operator"])
    before = snapshot(engine, accepted)
    r = rclient.post(f"/api/v1/dead-letters/groups/{key}/replay", json={"dry_run": True}, headers=op)
    assert r.status_code == 200 and r.get_json()["count"] == 3 and r.get_json()["dry_run"] is True
    assert snapshot(engine, accepted) == before and queue_length(api_redis_url, broker_prefix) == 0
    r = rclient.post(f"/api/v1/dead-letters/groups/{key}/replay", headers=op)
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    assert (body["replayed"], body["count"], body["remaining"], body["dry_run"]) == (3, 3, 0, False)
    assert body["group"]["id"] == key and body["group"]["cause"].startswith("grade <n>")
    assert [dead_letter_row(engine, i).status for i in ids["a"] + ids["b"]] == ["replayed"] * 3 + ["open"] * 2
    assert queue_length(api_redis_url, broker_prefix) == 1  # their chain, sent after the commit
    [entry] = audit_rows(engine, "bulk_replay", key)
    assert entry["key_id"] == key_id(KEYS["operator"]) and entry["count"] == 3 and entry["outcome"] == "ok"
    assert entry["target"]["record_type"] == "students" and entry["target"]["cause"] == body["group"]["cause"]


def test_api_discards_a_group_with_a_reason(rclient, engine, unique, word):
    _, ids = seeded(engine, unique, word)
    key = key_of(engine, ids["c"][0])
    op = bearer(KEYS["operator"])
    path = f"/api/v1/dead-letters/groups/{key}/discard"
    for body in ({}, {"reason": "  "}, {"dry_run": False}):
        r = rclient.post(path, json=body, headers=op)
        assert r.status_code == 400 and r.get_json()["parameter"] == "reason", body
    assert rclient.post(path, headers=op).status_code == 400  # no body at all
    r = rclient.post(path, json={"dry_run": True}, headers=op)
    assert r.status_code == 200 and r.get_json()["count"] == 1 and r.get_json()["dry_run"] is True
    assert dead_letter_row(engine, ids["c"][0]).status == "open"
    r = rclient.post(path, json={"reason": "provider outage, resent upstream"}, headers=op)
    assert r.status_code == 200 and r.get_json()["discarded"] == 1 and r.get_json()["remaining"] == 0
    assert dead_letter_row(engine, ids["c"][0]).status == "discarded"
    ok = [e for e in audit_rows(engine, "bulk_discard", key) if e["outcome"] == "ok"]
    assert [(e["count"], e["target"]["reason"]) for e in ok] == [(1, "provider outage, resent upstream")]


def test_api_unknown_group_and_bad_bodies(rclient):
    op = bearer(KEYS["operator"])
    for path in ("/api/v1/dead-letters/groups/0000000000000000", "/api/v1/dead-letters/groups/nope"):
        r = rclient.post(f"{path}/replay", json={"dry_run": True}, headers=op)
        assert r.status_code == 404 and r.get_json()["error"] == "not_found"
        assert rclient.post(f"{path}/discard", json={"reason": "x"}, headers=op).status_code == 404
    path = "/api/v1/dead-letters/groups/0000000000000000/replay"
    r = rclient.post(path, json={"dryrun": True}, headers=op)
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_body"
    assert rclient.post(path, json={"dry_run": "maybe"}, headers=op).status_code == 400
    assert rclient.post(path, json={"limit": 10_001}, headers=op).status_code == 400
    assert rclient.post(path, data="dry_run", content_type="text/plain", headers=op).status_code == 415


def test_api_roles_reader_lists_operator_acts(rclient, engine, unique, word):
    _, ids = seeded(engine, unique, word)
    key = key_of(engine, ids["b"][0])
    replay, discard = f"/api/v1/dead-letters/groups/{key}/replay", f"/api/v1/dead-letters/groups/{key}/discard"
    assert rclient.get("/api/v1/dead-letters/groups", headers=bearer(KEYS["reader"])).status_code == 200
    assert rclient.get("/api/v1/dead-letters/groups", headers=bearer(KEYS["ingest"])).status_code == 403
    assert rclient.get("/api/v1/dead-letters/groups").status_code == 401
    for role in ("reader", "ingest"):
        assert rclient.post(replay, json={"dry_run": True}, headers=bearer(KEYS[role])).status_code == 403
        assert rclient.post(discard, json={"reason": "no"}, headers=bearer(KEYS[role])).status_code == 403
    assert [dead_letter_row(engine, i).status for i in ids["b"]] == ["open", "open"]
    refused = audit_rows(engine, "bulk_discard", key)
    assert {(e["outcome"], e["key_id"]) for e in refused} == {
        ("refused", key_id(KEYS[r])) for r in ("reader", "ingest")
    }
    assert rclient.post(replay, json={"dry_run": True}, headers=bearer(KEYS["operator"])).status_code == 200


def test_openapi_documents_the_group_endpoints(client, auth):
    paths = client.get("/openapi.json", headers=auth).get_json()["paths"]
    listing = paths["/api/v1/dead-letters/groups"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"record_type", "status", "since", "limit", "cursor"}
    replay = paths["/api/v1/dead-letters/groups/{group}/replay"]["post"]
    assert {"200", "202", "404"} <= set(replay["responses"])
    discard = paths["/api/v1/dead-letters/groups/{group}/discard"]["post"]
    assert discard["requestBody"]["content"]["application/json"]["schema"]["additionalProperties"] is False


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_lists_groups_as_a_table_or_json(cli, engine, unique, word):
    accepted, ids = seeded(engine, unique, word)
    key = key_of(engine, ids["a"][0])
    r = cli("dlq", "groups", "--ingestion-id", str(accepted.ingestion_id))
    assert r.exit_code == 0, r.output
    assert key in r.output and f"grade <n> of '<v>' refused by {word}" in r.output
    r = cli("dlq", "groups", "--ingestion-id", str(accepted.ingestion_id), "--json", "--limit", "1")
    out = orjson.loads(r.output)
    assert [(g["id"], g["count"]) for g in out["groups"]] == [(key, 3)] and out["next"] == f"3.{key}"
    r = cli("dlq", "groups", "--ingestion-id", str(accepted.ingestion_id), "--error-type", "enrichment")
    assert r.exit_code == 0 and "no dead letters match" in r.output
    assert cli("dlq", "groups", "--cursor", "nope").exit_code == 2


def test_cli_replays_and_discards_a_group(cli, engine, unique, word, api_redis_url, broker_prefix):
    accepted, ids = seeded(engine, unique, word)
    a, b = key_of(engine, ids["a"][0]), key_of(engine, ids["b"][0])
    before = snapshot(engine, accepted)
    r = cli("dlq", "replay-group", a, "--dry-run")
    assert r.exit_code == 0 and "would replay 3 dead letters" in r.output, r.output
    r = cli("dlq", "discard-group", b, "--dry-run")
    assert r.exit_code == 0 and "would discard 2 dead letters" in r.output, r.output
    assert snapshot(engine, accepted) == before
    r = cli("dlq", "replay-group", a)
    assert r.exit_code == 0 and "replayed 3 dead letters" in r.output, r.output
    assert queue_length(api_redis_url, broker_prefix) == 1
    r = cli("dlq", "discard-group", b)
    assert r.exit_code == 2 and "reason" in r.output
    r = cli("dlq", "discard-group", b, "--reason", "duplicates of a resent file")
    assert r.exit_code == 0 and "discarded 2 dead letters" in r.output, r.output
    statuses = [dead_letter_row(engine, i).status for i in [*ids["a"], *ids["b"], *ids["c"]]]
    assert statuses == ["replayed"] * 3 + ["discarded"] * 2 + ["open"]
    assert [(e["key_id"], e["count"]) for e in audit_rows(engine, "bulk_replay", a)] == [("cli", 3)]
    assert [e["target"]["reason"] for e in audit_rows(engine, "bulk_discard", b)] == ["duplicates of a resent file"]
    r = cli("dlq", "replay-group", "0000000000000000")
    assert r.exit_code == 1 and "no dead-letter group" in r.output


# -- the migration -------------------------------------------------------------------------------


def test_the_migration_fills_the_cause_and_group_of_existing_dead_letters():
    """On a scratch database at 0012: dead letters written before the column get theirs, in batches."""
    from alembic import command

    from etl_app.migrate import alembic_config

    with fresh_database(f"{RUN_ID}_groups", migrate=False) as scratch:
        cfg = alembic_config(scratch)
        command.upgrade(cfg, "0012")
        with psycopg.connect(scratch) as conn:
            conn.execute(
                "INSERT INTO dead_letters (raw_record_id, ingestion_id, record_type, payload, error_type, error) "
                "SELECT i, gen_random_uuid(), 'tutors', '{}', 'validation', 'age ' || i || ' of ''T-' || i || ''' "
                "refused' FROM generate_series(1, 12001) AS i"
            )
        command.upgrade(cfg, "heads")
        with psycopg.connect(scratch) as conn:
            rows = conn.execute("SELECT cause, group_key, count(*) FROM dead_letters GROUP BY 1, 2").fetchall()
        cause = normalise("age 1 of 'T-1' refused")
        assert rows == [(cause, hashlib.md5(f"tutors\x1fvalidation\x1f{cause}".encode()).hexdigest()[:16], 12001)]
        command.downgrade(cfg, "0012")
        with psycopg.connect(scratch) as conn:
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'dead_letters'"
            ).fetchall()
        assert {"cause", "group_key"}.isdisjoint(c for (c,) in columns)


def test_tutors_group_apart_from_students(engine, unique, word):
    accepted_s = store(engine, "students", [student(unique)])
    accepted_t = store(engine, "tutors", [tutor(unique)])
    [s] = bury(engine, accepted_s.ids, error=f"{word} 1")
    [t] = bury(engine, accepted_t.ids, error=f"{word} 2")
    assert dead_letter_row(engine, s).cause == dead_letter_row(engine, t).cause
    assert key_of(engine, s) != key_of(engine, t)
    assert [g["record_type"] for g in listed(engine, record_type="tutors", ingestion_id=accepted_t.ingestion_id)] == [
        "tutors"
    ]
