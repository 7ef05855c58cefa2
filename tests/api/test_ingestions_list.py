"""``GET /api/v1/ingestions``: the ingestions newest first in keyset pages, filtered by record
type, status and creation time, each as ``GET /api/v1/ingestions/{id}`` shows it."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from tests.helpers.payloads import student, tutor
from tests.helpers.support import API_KEY
from tests.ui.test_ui_ingestions import settle_by_hand

LIST = "/api/v1/ingestions"


def submit(client, auth, path: str, payload) -> str:
    r = client.post(f"/api/v1/{path}", json=payload, headers=auth)
    assert r.status_code == 202, r.get_data(as_text=True)
    return r.get_json()["ingestion_id"]


def listed(client, auth, **params) -> dict:
    r = client.get(LIST, query_string=params, headers=auth)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def test_lists_ingestions_newest_first_each_as_its_own_page_shows_it(client, auth, unique, since):
    first = submit(client, auth, "students/batch", [student(f"{unique}-1"), {"student_id": "bad id!"}])
    second = submit(client, auth, "tutors/batch", [tutor(f"{unique}-t")])
    page = listed(client, auth, since=since)
    assert [i["id"] for i in page["ingestions"]] == [second, first]
    assert page["next"] is None and page["limit"] == 25
    one = client.get(f"{LIST}/{first}", headers=auth).get_json()
    assert page["ingestions"][1] == one
    assert one["counts"]["received"] == 1 and one["counts"]["rejected"] == 1 and one["status"] == "running"


def test_filters_by_record_type_status_and_since(client, auth, engine, unique, since):
    running = submit(client, auth, "students/batch", [student(f"{unique}-r")])
    done = submit(client, auth, "students/batch", [student(f"{unique}-d")])
    settle_by_hand(engine, done)
    other = submit(client, auth, "tutors/batch", [tutor(f"{unique}-t")])
    ids = lambda **params: [i["id"] for i in listed(client, auth, **{"since": since, **params})["ingestions"]]  # noqa: E731
    assert ids(record_type="students") == [done, running]
    assert ids(record_type="students", status="running") == [running]
    assert ids(status="finished") == [done]
    assert ids(status="failed") == []
    assert ids(record_type="tutors") == [other]
    with engine.connect() as conn:
        created = conn.scalar(sa.text("SELECT created_at FROM ingestions WHERE id = :i"), {"i": done})
    assert ids(since=created.isoformat()) == [other, done]


def test_pages_follow_the_next_cursor_to_the_last(client, auth, unique, since):
    made = [submit(client, auth, "students/batch", [student(f"{unique}-{n}")]) for n in range(3)]
    page = listed(client, auth, since=since, limit=2)
    assert [i["id"] for i in page["ingestions"]] == [made[2], made[1]] and page["limit"] == 2
    assert page["next"] and page["next"] == quote(page["next"], safe=":~")  # pasted as it is into a URL
    r = client.get(f"{LIST}?since={quote(since)}&limit=2&cursor={page['next']}", headers=auth)
    last = r.get_json()
    assert [i["id"] for i in last["ingestions"]] == [made[0]] and last["next"] is None


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("status=lost", "status"),
        ("status=", "status"),
        ("record_type=nope", "record_type"),
        ("since=yesterday", "since"),
        ("since=2026-02-30T00:00:00Z", "since"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=+5", "limit"),
        ("cursor=garbage", "cursor"),
        ("cursor=2026-11-30T12:00:00~" + str(uuid.UUID(int=1)), "cursor"),  # no offset
        ("cursor=20261130T120000Z~" + str(uuid.UUID(int=1)), "cursor"),  # not as the list writes it
        ("type=students", "type"),  # the page's name for it, not the API's
    ],
)
def test_a_bad_filter_or_cursor_is_a_400_naming_it(client, auth, query, parameter):
    r = client.get(f"{LIST}?{query}", headers=auth)
    assert r.status_code == 400, r.get_data(as_text=True)
    body = r.get_json()
    assert (body["error"], body["parameter"]) == ("invalid_parameter", parameter)


def test_a_key_needs_the_read_right(make_app):
    app = make_app(api_keys=(API_KEY, "ingest-only-key:ingest", "reader-key:reader"))
    client = app.test_client()
    assert client.get(LIST).status_code == 401
    assert client.get(LIST, headers={"Authorization": "Bearer wrong"}).status_code == 401
    refused = client.get(LIST, headers={"Authorization": "Bearer ingest-only-key"})
    assert refused.status_code == 403 and refused.get_json()["error"] == "forbidden"
    assert client.get(LIST, headers={"Authorization": "Bearer reader-key"}).status_code == 200


def test_the_list_is_documented_with_its_filters(client, auth):
    spec = client.get("/openapi.json", headers=auth).get_json()
    operation = spec["paths"]["/api/v1/ingestions"]["get"]
    parameters = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert set(parameters) == {"record_type", "status", "since", "limit", "cursor"}
    assert parameters["status"]["enum"] == ["running", "finished", "failed"]
    assert parameters["limit"]["maximum"] == 100
    assert {"200", "400", "401", "403"} <= set(operation["responses"])
    assert client.options(LIST, headers=auth).headers["Allow"].replace(" ", "").split(",").count("GET") == 1
