"""`etl-app dlq …` and `etl-app status` against the test database (no worker)."""

from __future__ import annotations

import uuid

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from etl_app.cli import main
from etl_app.dead_letters import actions
from etl_app.pipeline.persist import persist_chunk
from etl_app.record_types import get_registry

from tests.helpers.dead_letters import dead, dead_letter_row, enriched_chunk, land, raw_row
from tests.helpers.payloads import student
from tests.helpers.support import queue_length


@pytest.fixture
def cli(make_cli):
    return make_cli()


def test_list_shows_a_table_and_filters(cli, engine, unique):
    accepted, ids = dead(engine, "students", [student(f"{unique}-1"), student(f"{unique}-2")], error="bad grade")
    r = cli("dlq", "list", "--ingestion-id", str(accepted.ingestion_id), "--record-type", "students")
    assert r.exit_code == 0, r.output
    assert f"{unique}-1" in r.output and f"{unique}-2" in r.output and "bad grade" in r.output
    r = cli("dlq", "list", "--ingestion-id", str(accepted.ingestion_id), "--limit", "1")
    assert f"{unique}-2" in r.output and f"{unique}-1" not in r.output
    assert f"--cursor {ids[1]}" in r.output
    r = cli("dlq", "list", "--ingestion-id", str(accepted.ingestion_id), "--error-type", "internal")
    assert r.exit_code == 0 and "no dead letters match" in r.output


def test_list_refuses_a_bad_filter(cli):
    r = cli("dlq", "list", "--error-type", "nope")
    assert r.exit_code != 0 and "error_type" in r.output
    r = cli("dlq", "list", "--since", "yesterday")
    assert r.exit_code != 0 and "since" in r.output


def test_show_prints_payload_error_and_traceback(cli, engine, unique):
    _, [dl_id] = dead(engine, "students", [student(unique)], error="grade [9] refused", traceback="Traceback\n  boom")
    r = cli("dlq", "show", str(dl_id))
    assert r.exit_code == 0, r.output
    assert f'"student_id": "{unique}"' in r.output
    assert "grade [9] refused" in r.output and "boom" in r.output and "record_status: dead" in r.output


def test_show_unknown_is_an_error(cli):
    r = cli("dlq", "show", "999999999")
    assert r.exit_code == 1 and "no dead letter 999999999" in r.output


def test_replay_one_then_again_is_refused(cli, engine, unique, api_redis_url, broker_prefix):
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    r = cli("dlq", "replay", str(dl_id))
    assert r.exit_code == 0, r.output
    assert f"replayed dead letter {dl_id}" in r.output
    assert raw_row(engine, accepted.ids[0]).status == "received"
    assert dead_letter_row(engine, dl_id).replay_count == 1
    assert queue_length(api_redis_url, broker_prefix) == 1
    r = cli("dlq", "replay", str(dl_id))
    assert r.exit_code == 1 and "not open" in r.output


def test_replay_with_a_payload_file(cli, engine, unique, tmp_path):
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps(student(unique, grade_level=99)))
    r = cli("dlq", "replay", str(dl_id), "--payload-file", str(bad))
    assert r.exit_code == 1 and "grade_level" in r.output and "nothing was changed" in r.output
    assert raw_row(engine, accepted.ids[0]).status == "dead"
    r = cli("dlq", "replay", str(dl_id), "--payload-file", "-", input=b"{not json")
    assert r.exit_code == 1 and "not valid JSON" in r.output
    r = cli("dlq", "replay", str(dl_id), "--payload-file", "-", input=orjson.dumps(student(unique, grade_level=3)))
    assert r.exit_code == 0, r.output
    assert raw_row(engine, accepted.ids[0]).payload["grade_level"] == 3
    with engine.connect() as conn:  # the edit is kept, as the API's and the page's are
        kept = conn.execute(
            sa.text("SELECT key_id, original, edited FROM dead_letter_edits WHERE dead_letter_id = :i"), {"i": dl_id}
        ).all()
    assert kept == [("cli", student(unique), student(unique, grade_level=3))]


def test_replay_all_by_filters(cli, engine, unique):
    accepted, ids = dead(engine, "students", [student(f"{unique}-{i}") for i in range(3)])
    r = cli("dlq", "replay", "--all", "--ingestion-id", str(accepted.ingestion_id), "--limit", "2")
    assert r.exit_code == 0, r.output
    assert "replayed 2 dead letters; 1 matching ones are still open" in r.output
    r = cli("dlq", "replay", "--all", "--ingestion-id", str(accepted.ingestion_id))
    assert "replayed 1 dead letters; 0 matching" in r.output
    assert {dead_letter_row(engine, i).status for i in ids} == {"replayed"}


def test_replay_all_refuses_an_empty_filter(cli, engine, unique):
    accepted, ids = dead(engine, "students", [student(f"{unique}-{i}") for i in range(2)])
    for args in (("--record-type", ""), ("--ingestion-id", str(accepted.ingestion_id), "--since", "")):
        r = cli("dlq", "replay", "--all", *args)
        assert r.exit_code == 2 and "is empty: give it a value or leave it out" in r.output, r.output
    assert "--record-type is empty" in cli("dlq", "replay", "--all", "--record-type", "").output
    assert {dead_letter_row(engine, i).status for i in ids} == {"open"}


def test_replay_all_dry_run_counts_and_changes_nothing(cli, engine, unique):
    accepted, ids = dead(engine, "students", [student(f"{unique}-{i}") for i in range(3)])
    before = [tuple(dead_letter_row(engine, i)) for i in ids]
    r = cli("dlq", "replay", "--all", "--dry-run", "--ingestion-id", str(accepted.ingestion_id), "--limit", "2")
    assert r.exit_code == 0, r.output
    assert "dry run: would replay 2 dead letters; 1 matching ones would stay open" in r.output
    r = cli("dlq", "replay", "--all", "--dry-run")  # no filter: every open one, counted
    assert r.exit_code == 0 and "dry run: would replay" in r.output, r.output
    assert [tuple(dead_letter_row(engine, i)) for i in ids] == before
    assert {raw_row(engine, i).status for i in accepted.ids} == {"dead"}


def test_a_superseded_correction_says_which_record_kept_the_key(cli, engine, unique):
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    newer = land(engine, "students", [student(unique, grade_level=10)])
    with engine.begin() as conn:
        actions.replay(conn, get_registry(), dl_id, student(unique, grade_level=11))
    chunk = enriched_chunk(engine, "students", accepted.ids)
    with engine.begin() as conn:
        persist_chunk(conn, get_registry()["students"], chunk["items"])

    r = cli("dlq", "show", str(dl_id))
    assert r.exit_code == 0, r.output
    assert "status: superseded" in r.output and "last_outcome: superseded" in r.output
    assert (
        f"superseded_by: raw record {newer.ids[0]} of ingestion {newer.ingestion_id}: the replayed record did not "
        "land, this later one of its key is stored"
    ) in " ".join(r.output.split())
    r = cli("dlq", "list", "--ingestion-id", str(accepted.ingestion_id), "--status", "superseded")
    assert r.exit_code == 0, r.output
    assert f"superseded by raw record {newer.ids[0]}" in r.output
    r = cli("dlq", "list", "--ingestion-id", str(accepted.ingestion_id))
    assert "no dead letters match" in r.output


@pytest.mark.parametrize(
    "args",
    [
        ("dlq", "replay"),
        ("dlq", "replay", "5", "--all"),
        ("dlq", "replay", "5", "--record-type", "students"),
        ("dlq", "replay", "--all", "--payload-file", "-"),
        ("dlq", "replay", "5", "--dry-run"),
    ],
)
def test_replay_usage_errors(cli, args):
    r = cli(*args)
    assert r.exit_code == 2


def test_discard(cli, engine, unique):
    accepted, [dl_id] = dead(engine, "students", [student(unique)])
    r = cli("dlq", "discard", str(dl_id))
    assert r.exit_code == 0 and f"discarded dead letter {dl_id}" in r.output
    assert dead_letter_row(engine, dl_id).status == "discarded"
    assert raw_row(engine, accepted.ids[0]).status == "dead"
    assert cli("dlq", "discard", "999999999").exit_code == 1


def test_status_prints_the_counts(cli, engine, unique):
    accepted, _ = dead(engine, "students", [student(unique)])
    r = cli("status", str(accepted.ingestion_id))
    assert r.exit_code == 0, r.output
    assert "students" in r.output and "finished" in r.output
    lines = {line.split()[0]: line.split()[1] for line in r.output.splitlines()[1:] if len(line.split()) == 2}
    assert lines["dead"] == "1" and lines["in_flight"] == "0" and lines["received"] == "1"
    assert cli("status", str(uuid.uuid4())).exit_code == 1
    r = cli("status", "nope")
    assert r.exit_code == 1 and "not an ingestion id" in r.output


def test_without_a_database_url_it_says_so(tmp_path):
    r = CliRunner().invoke(
        main, ["dlq", "list"], env={"DATABASE_URL": "", "ETL_VAR_DIR": str(tmp_path)}, catch_exceptions=False
    )
    assert r.exit_code == 1 and "DATABASE_URL" in r.output
