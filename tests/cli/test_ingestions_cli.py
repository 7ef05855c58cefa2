"""``etl-app ingestions list|show`` against the test database (no worker): the same ingestions,
filters and cursor as ``GET /api/v1/ingestions``."""

from __future__ import annotations

import uuid

import orjson
import pytest

from tests.api.test_ingestions_list import submit
from tests.helpers.payloads import student, tutor
from tests.ui.test_ui_ingestions import settle_by_hand


@pytest.fixture
def cli(make_cli):
    return make_cli(COLUMNS="250")


def test_list_shows_a_table_filters_and_pages_as_the_api(cli, client, auth, engine, unique, since):
    running = submit(client, auth, "students/batch", [student(f"{unique}-r")])
    done = submit(client, auth, "students/batch", [student(f"{unique}-d"), student(f"{unique}-e")])
    settle_by_hand(engine, done, dead=1)
    other = submit(client, auth, "tutors/batch", [tutor(f"{unique}-t")])
    r = cli("ingestions", "list", "--since", since)
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if any(i in line for i in (running, done, other))]
    assert [next(i for i in (running, done, other) if i in row) for row in rows] == [other, done, running]
    assert "finished" in rows[1] and "running" in rows[2] and "tutors" in rows[0]
    r = cli("ingestions", "list", "--since", since, "--record-type", "students", "--status", "finished")
    assert done in r.output and running not in r.output and other not in r.output
    r = cli("ingestions", "list", "--since", since, "--limit", "2")
    assert running not in r.output
    cursor = r.output.split("more: --cursor ")[1].strip()
    r = cli("ingestions", "list", "--since", since, "--limit", "2", "--cursor", cursor, "--json")
    page = orjson.loads(r.output)
    assert [i["id"] for i in page["ingestions"]] == [running] and page["next"] is None
    api = client.get("/api/v1/ingestions", query_string={"since": since, "limit": 2, "cursor": cursor}, headers=auth)
    assert page == api.get_json()


def test_list_refuses_a_bad_filter_or_cursor(cli):
    for args, named in [
        (("--status", "lost"), "--status"),
        (("--record-type", "nope"), "--record-type"),
        (("--since", "yesterday"), "--since"),
        (("--cursor", "garbage"), "--cursor"),
    ]:
        r = cli("ingestions", "list", *args)
        assert r.exit_code == 2 and named in r.output, r.output


def test_show_prints_counts_and_quality_and_json_as_the_api(cli, client, auth, engine, unique):
    done = submit(client, auth, "students/batch", [student(f"{unique}-1"), student(f"{unique}-2")])
    settle_by_hand(engine, done, dead=1)
    r = cli("ingestions", "show", done)
    assert r.exit_code == 0, r.output
    assert f"ingestion {done} (students, batch): finished" in r.output
    assert "persisted" in r.output and "quality: score" in r.output
    r = cli("ingestions", "show", done, "--json")
    assert orjson.loads(r.output) == client.get(f"/api/v1/ingestions/{done}", headers=auth).get_json()
    missing = cli("ingestions", "show", str(uuid.uuid4()))
    assert missing.exit_code == 1 and "no ingestion" in missing.output
    assert cli("ingestions", "show", "nope").exit_code == 1
