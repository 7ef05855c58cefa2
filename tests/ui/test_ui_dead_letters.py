"""The Dead letters pages (etl_app.ui.dead_letters): groups with their counts and arrivals, one
group with its dead letters, the replay's dry-run count before the replay, discard with a reason,
one dead letter edited and replayed (the edit kept and shown as a diff, as the API's edit keeps
it), roles, escaping. Real PostgreSQL and Redis, Flask's test client, no worker: dead letters are
made with the pipeline's functions (tests/helpers/dead_letters.py). The browser tests are
tests/e2e/ui/test_ui_dead_letters_browser.py."""

from __future__ import annotations

import re
import uuid

import pytest
import sqlalchemy as sa

from etl_app.roles import key_id
from etl_app.ui.dead_letters import line_diff, pretty

from tests.helpers.dead_letters import bury, dead_letter_row, raw_row, store
from tests.helpers.payloads import student
from tests.helpers.support import API_KEY, queue_length
from tests.helpers.ui import csrf_token, post_form, sign_in

KEYS = {role: f"ui-dl-{role}-{uuid.uuid4().hex[:8]}" for role in ("reader", "operator")}
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def ui_app(make_app):
    return make_app(api_keys=(API_KEY, *(f"{key}:{role}" for role, key in KEYS.items())))


@pytest.fixture
def operator(ui_app):
    client = ui_app.test_client()
    sign_in(client, KEYS["operator"])
    return client


@pytest.fixture
def reader(ui_app):
    client = ui_app.test_client()
    sign_in(client, KEYS["reader"])
    return client


@pytest.fixture
def word(unique) -> str:
    """Letters only (the normaliser keeps them): this test's own causes."""
    return unique.translate(str.maketrans("0123456789", "ghijklmnop"))


def seeded(engine, unique: str, word: str):
    """Students dead-lettered with two causes: ``a`` (3, a missing parent of keys without digits,
    one group: the parent's type is this test's word) and ``b`` (2); the ingestion's accepted records."""
    accepted = store(engine, "students", [student(f"{unique}-{i}") for i in range(5)])
    ids = accepted.ids
    a = [
        bury(engine, [raw], error_type="missing_parent", error=f"parent {word}:{name} not found after waiting 8s")[0]
        for raw, name in zip(ids[:3], ("alice", "bob", "carol"), strict=True)
    ]
    b = bury(engine, ids[3:], error=f"grade {ids[3]} refused by {word}")
    return accepted, {"a": a, "b": b}


def audit_rows(engine, action: str, key: str) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT * FROM audit WHERE action = :a AND key_id = :k ORDER BY id"),
            {"a": action, "k": key_id(key)},
        ).mappings()
        return [dict(r) for r in rows]


def edits_of(engine, dead_letter_id: int) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT * FROM dead_letter_edits WHERE dead_letter_id = :id ORDER BY id"), {"id": dead_letter_id}
        ).mappings()
        return [dict(r) for r in rows]


def text_of(response) -> str:
    return response.get_data(as_text=True)


def section_of(page: str, group: str) -> str:
    found = re.search(rf'<section class="card dl-group" data-group="{group}".*?</section>', page, re.S)
    assert found, f"no section of group {group}"
    return found.group(0)


# -- the groups ------------------------------------------------------------------------------------


def test_the_groups_are_listed_with_their_counts_samples_and_arrivals(reader, engine, unique, word):
    accepted, ids = seeded(engine, unique, word)
    r = reader.get(f"/ui/dead-letters?ingestion_id={accepted.ingestion_id}")
    assert r.status_code == 200, text_of(r)
    page = text_of(r)
    a, b = dead_letter_row(engine, ids["a"][0]).group_key, dead_letter_row(engine, ids["b"][0]).group_key
    assert page.index(f'data-group="{a}"') < page.index(f'data-group="{b}"')  # most dead letters first
    first = section_of(page, a)
    # keys without digits: one group for the three missing parents
    assert f"parent {word}:&lt;key&gt; not found after waiting &lt;n&gt;s" in first
    assert '<div class="value" data-field="count">3</div>' in first
    assert "missing_parent" in first and f"dead letter {ids['a'][2]}" in first  # the newest as sample
    assert f"{unique}-2" in first  # the sample's payload, as text
    assert "plotly.min.js" in page and "dead_letters.js" in page
    assert re.search(r'data-counts="\[(0,){23}3\]"', first)  # this hour's three
    assert first.count('<td class="num">') == 24  # the same numbers as a table
    assert '<div class="value" data-field="count">2</div>' in section_of(page, b)


def test_the_list_filters_by_record_type_error_type_and_status_and_pages_by_keyset(
    reader, engine, unique, word, monkeypatch
):
    accepted, ids = seeded(engine, unique, word)
    a, b = dead_letter_row(engine, ids["a"][0]).group_key, dead_letter_row(engine, ids["b"][0]).group_key
    base = f"/ui/dead-letters?ingestion_id={accepted.ingestion_id}"
    page = text_of(reader.get(f"{base}&error_type=missing_parent&record_type=students"))
    assert f'data-group="{a}"' in page and f'data-group="{b}"' not in page
    assert f'data-group="{a}"' not in text_of(reader.get(f"{base}&record_type=tutors"))
    assert f'data-group="{a}"' not in text_of(reader.get(f"{base}&status=replayed"))
    assert f'data-group="{a}"' in text_of(reader.get(f"{base}&status=all&record_type="))  # empty: every
    monkeypatch.setattr("etl_app.ui.dead_letters.GROUPS_PER_PAGE", 1)
    first = text_of(reader.get(base))
    assert f'data-group="{a}"' in first and f'data-group="{b}"' not in first
    following = re.search(r'<a href="([^"]+)" rel="next">More groups</a>', first).group(1).replace("&amp;", "&")
    second = text_of(reader.get(following))
    assert f'data-group="{b}"' in second and f'data-group="{a}"' not in second and "First page" in second
    assert reader.get("/ui/dead-letters?record_type=nope").status_code == 400
    assert reader.get("/ui/dead-letters?cursor=abc").status_code == 400


def test_the_json_the_list_polls_has_each_groups_numbers_now(reader, engine, unique, word):
    accepted, ids = seeded(engine, unique, word)
    a, b = dead_letter_row(engine, ids["a"][0]).group_key, dead_letter_row(engine, ids["b"][0]).group_key
    r = reader.get(f"/ui/api/dead-letters?group={a}&group={b}&group=nothex&ingestion_id={accepted.ingestion_id}")
    assert r.status_code == 200
    got = {g["id"]: g for g in r.get_json()["groups"]}
    assert {k: v["count"] for k, v in got.items()} == {a: 3, b: 2}
    assert len(got[a]["arrivals"]["counts"]) == 24 and sum(got[a]["arrivals"]["counts"]) == 3
    bury(engine, store(engine, "students", [student(f"{unique}-late")]).ids, error_type="missing_parent",
         error=f"parent {word}:dave not found after waiting 8s")  # fmt: skip
    assert reader.get(f"/ui/api/dead-letters?group={a}").get_json()["groups"][0]["count"] == 4


# -- one group -----------------------------------------------------------------------------------


def test_the_group_page_lists_its_dead_letters_by_keyset(reader, engine, unique, word, monkeypatch):
    _, ids = seeded(engine, unique, word)
    a = dead_letter_row(engine, ids["a"][0]).group_key
    page = text_of(reader.get(f"/ui/dead-letters/groups/{a}"))
    assert '<div class="value" id="open-count">3</div>' in page
    assert f'data-url="/ui/api/dead-letters?group={a}"' in page  # its open count is polled
    assert [int(i) for i in re.findall(r'<tr data-id="(\d+)">', page)] == sorted(ids["a"], reverse=True)
    monkeypatch.setattr("etl_app.ui.dead_letters.DEAD_LETTERS_PER_PAGE", 2)
    page = text_of(reader.get(f"/ui/dead-letters/groups/{a}"))
    assert [int(i) for i in re.findall(r'<tr data-id="(\d+)">', page)] == sorted(ids["a"], reverse=True)[:2]
    older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', page).group(1).replace("&amp;", "&")
    page = text_of(reader.get(older))
    assert [int(i) for i in re.findall(r'<tr data-id="(\d+)">', page)] == [min(ids["a"])]
    assert reader.get("/ui/dead-letters/groups/0123456789abcdef").status_code == 404
    assert reader.get("/ui/dead-letters/groups/not-a-key").status_code == 404


def test_replaying_a_group_shows_the_count_first_then_replays_exactly_those_and_audits_it(
    operator, engine, unique, word, api_redis_url, broker_prefix
):
    accepted, ids = seeded(engine, unique, word)
    a = dead_letter_row(engine, ids["a"][0]).group_key
    page = text_of(operator.get(f"/ui/dead-letters/groups/{a}"))
    assert "Replay group…" in page and "Discard group" in page
    r = operator.get(f"/ui/dead-letters/groups/{a}/replay")  # the dry run: nothing changes
    assert r.status_code == 200
    assert "Replay 3 dead letters?" in text_of(r) and "Confirm: replay 3" in text_of(r)
    assert [dead_letter_row(engine, i).status for i in ids["a"]] == ["open"] * 3
    assert queue_length(api_redis_url, broker_prefix) == 0
    r = post_form(operator, f"/ui/dead-letters/groups/{a}/replay", f"/ui/dead-letters/groups/{a}/replay")
    assert r.status_code == 302 and r.headers["Location"] == f"/ui/dead-letters/groups/{a}"
    assert [dead_letter_row(engine, i).status for i in ids["a"] + ids["b"]] == ["replayed"] * 3 + ["open"] * 2
    statuses = [raw_row(engine, raw).status for raw in accepted.ids]
    assert statuses == ["received"] * 3 + ["dead"] * 2  # exactly the group's records are back
    assert queue_length(api_redis_url, broker_prefix) == 1  # their chain, sent after the commit
    [entry] = audit_rows(engine, "bulk_replay", KEYS["operator"])[-1:]
    assert entry["outcome"] == "ok" and entry["count"] == 3 and entry["target"]["group"] == a
    assert entry["target"]["error_type"] == "missing_parent"
    assert "Replayed 3 dead letters." in text_of(operator.get(f"/ui/dead-letters/groups/{a}"))


def test_discarding_a_group_needs_a_reason(operator, engine, unique, word):
    _, ids = seeded(engine, unique, word)
    b = dead_letter_row(engine, ids["b"][0]).group_key
    path = f"/ui/dead-letters/groups/{b}/discard"
    r = post_form(operator, path, f"/ui/dead-letters/groups/{b}", reason="   ")
    assert r.status_code == 400 and "reason: is required" in text_of(r)
    assert [dead_letter_row(engine, i).status for i in ids["b"]] == ["open"] * 2
    r = post_form(operator, path, f"/ui/dead-letters/groups/{b}", reason="resent upstream <b>today</b>")
    assert r.status_code == 302
    assert [dead_letter_row(engine, i).status for i in ids["b"]] == ["discarded"] * 2
    assert [dead_letter_row(engine, i).status for i in ids["a"]] == ["open"] * 3
    entry = audit_rows(engine, "bulk_discard", KEYS["operator"])[-1]
    assert (entry["count"], entry["target"]["reason"], entry["target"]["group"]) == (
        2,
        "resent upstream <b>today</b>",
        b,
    )


def test_a_reader_sees_no_action_and_its_posts_are_refused_and_audited(reader, engine, unique, word):
    _, ids = seeded(engine, unique, word)
    a, dl = dead_letter_row(engine, ids["a"][0]).group_key, ids["a"][0]
    group_page = text_of(reader.get(f"/ui/dead-letters/groups/{a}"))
    one = text_of(reader.get(f"/ui/dead-letters/{dl}"))
    for page in (group_page, one):
        assert "Replay" not in page and "Discard" not in page and "<textarea" not in page
        assert page.count('method="post"') == 1  # the sign-out form only
    assert reader.get(f"/ui/dead-letters/groups/{a}/replay").status_code == 403
    posts = [
        (f"/ui/dead-letters/groups/{a}/replay", "bulk_replay", {}),
        (f"/ui/dead-letters/groups/{a}/discard", "bulk_discard", {"reason": "no"}),
        (f"/ui/dead-letters/{dl}/replay", "replay", {}),
        (f"/ui/dead-letters/{dl}/discard", "discard", {"reason": "no"}),
        (f"/ui/dead-letters/{dl}/edit", "edit", {"payload": "{}"}),
    ]
    for path, action, form in posts:
        r = post_form(reader, path, f"/ui/dead-letters/{dl}", **form)
        assert r.status_code == 403, path
        entry = audit_rows(engine, action, KEYS["reader"])[-1]
        assert entry["outcome"] == "refused" and entry["target"]["path"] == path
    assert [dead_letter_row(engine, i).status for i in ids["a"] + ids["b"]] == ["open"] * 5


def test_a_post_without_its_csrf_token_is_refused(operator, engine, unique, word):
    _, ids = seeded(engine, unique, word)
    a = dead_letter_row(engine, ids["a"][0]).group_key
    assert operator.post(f"/ui/dead-letters/groups/{a}/replay").status_code == 400
    assert [dead_letter_row(engine, i).status for i in ids["a"]] == ["open"] * 3


# -- one dead letter -------------------------------------------------------------------------------


def test_a_payload_holding_a_script_renders_escaped_everywhere(operator, engine, unique, word):
    accepted = store(engine, "students", [student(f"{unique}-x", name=SCRIPT)])
    [dl] = bury(engine, accepted.ids, error=f"{word} refused {SCRIPT}", traceback=f"Traceback\n  {SCRIPT}")
    group = dead_letter_row(engine, dl).group_key
    pages = [
        text_of(operator.get(f"/ui/dead-letters?ingestion_id={accepted.ingestion_id}")),
        text_of(operator.get(f"/ui/dead-letters/groups/{group}")),
        text_of(operator.get(f"/ui/dead-letters/{dl}")),
        text_of(operator.get(f"/ui/dead-letters/groups/{group}/replay")),
    ]
    for page in pages:
        assert "&lt;script&gt;" in page and "<script>alert" not in page
    assert pages[2].count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # error, traceback, payload, textarea


def test_one_dead_letter_shows_its_facts_lineage_and_collapsed_traceback(reader, engine, unique, word):
    accepted = store(engine, "students", [student(f"{unique}-one")])
    [dl] = bury(engine, accepted.ids, error=f"{word} broke", traceback="Traceback (most recent call last):\n  boom")
    page = text_of(reader.get(f"/ui/dead-letters/{dl}"))
    assert f'href="/ui/records/students/{unique}-one"' in page
    assert '<details class="traceback">' in page and "boom" in page
    assert "students" in page and f"{word} broke" in page and "Not edited." in page
    assert reader.get("/ui/dead-letters/999999999999").status_code == 404


def test_an_edit_with_invalid_json_is_a_400_that_keeps_the_text_and_changes_nothing(operator, engine, unique):
    accepted = store(engine, "students", [student(f"{unique}-e", grade_level=99)])
    [dl] = bury(engine, accepted.ids, error="grade_level: Must be between 1 and 12.")
    before = raw_row(engine, accepted.ids[0])
    text = '{"student_id": "oops", <b>'
    r = post_form(operator, f"/ui/dead-letters/{dl}/edit", f"/ui/dead-letters/{dl}", payload=text)
    assert r.status_code == 400
    page = text_of(r)
    assert "not valid JSON" in page and "{&#34;student_id&#34;: &#34;oops&#34;, &lt;b&gt;</textarea>" in page
    assert raw_row(engine, accepted.ids[0]) == before and dead_letter_row(engine, dl).status == "open"
    assert edits_of(engine, dl) == []


def test_an_edit_naming_a_key_twice_is_a_400_that_says_which_and_changes_nothing(operator, engine, unique):
    accepted = store(engine, "students", [student(f"{unique}-d", grade_level=99)])
    [dl] = bury(engine, accepted.ids, error="grade_level: Must be between 1 and 12.")
    text = f'{{"student_id": "{unique}-d", "grade_level": 99, "grade_level": 5}}'
    r = post_form(operator, f"/ui/dead-letters/{dl}/edit", f"/ui/dead-letters/{dl}", payload=text)
    assert r.status_code == 400
    assert "it has the key &#39;grade_level&#39; twice" in text_of(r)
    assert dead_letter_row(engine, dl).status == "open" and edits_of(engine, dl) == []


def test_an_edit_the_record_type_refuses_shows_its_field_errors_and_changes_nothing(operator, engine, unique):
    accepted = store(engine, "students", [student(f"{unique}-f", grade_level=99)])
    [dl] = bury(engine, accepted.ids, error="grade_level: Must be between 1 and 12.")
    payload = pretty(student(f"{unique}-f", grade_level=42))
    r = post_form(operator, f"/ui/dead-letters/{dl}/edit", f"/ui/dead-letters/{dl}", payload=payload)
    assert r.status_code == 422
    page = text_of(r)
    assert 'id="field-errors"' in page and "grade_level" in page and "nothing was changed" in page
    assert dead_letter_row(engine, dl).status == "open" and edits_of(engine, dl) == []
    assert raw_row(engine, accepted.ids[0]).payload["grade_level"] == 99


def test_a_valid_edit_is_replayed_kept_with_its_key_id_and_shown_as_a_diff(
    operator, engine, unique, api_redis_url, broker_prefix
):
    accepted = store(engine, "students", [student(f"{unique}-g", grade_level=99)])
    [dl] = bury(engine, accepted.ids, error="grade_level: Must be between 1 and 12.")
    edited = student(f"{unique}-g", grade_level=11)
    r = post_form(operator, f"/ui/dead-letters/{dl}/edit", f"/ui/dead-letters/{dl}", payload=pretty(edited))
    assert r.status_code == 302, text_of(r)
    assert dead_letter_row(engine, dl).status == "replayed"
    raw = raw_row(engine, accepted.ids[0])
    assert raw.status == "received" and raw.payload["grade_level"] == 11
    assert queue_length(api_redis_url, broker_prefix) == 1
    [kept] = edits_of(engine, dl)
    assert kept["key_id"] == key_id(KEYS["operator"]) and kept["raw_record_id"] == accepted.ids[0]
    assert kept["original"]["grade_level"] == 99 and kept["edited"] == edited
    assert audit_rows(engine, "edit", KEYS["operator"])[-1]["target"] == {"dead_letter_id": dl}
    page = text_of(operator.get(f"/ui/dead-letters/{dl}"))
    assert "<del>-   &#34;grade_level&#34;: 99,</del>" in page
    assert "<ins>+   &#34;grade_level&#34;: 11,</ins>" in page
    assert key_id(KEYS["operator"]) in page and "Edit and replay" not in page  # replayed: no longer open


def test_the_apis_edit_is_kept_alike_and_listed_in_its_get(ui_app, engine, unique, auth):
    accepted = store(engine, "students", [student(f"{unique}-h", grade_level=0)])
    [dl] = bury(engine, accepted.ids, error="grade_level: Must be between 1 and 12.")
    client = ui_app.test_client()
    r = client.post(f"/api/v1/dead-letters/{dl}/replay", json={"payload": student(f"{unique}-h")}, headers=auth)
    assert r.status_code == 202, r.get_json()
    [kept] = edits_of(engine, dl)
    assert kept["key_id"] == key_id(API_KEY) and kept["original"]["grade_level"] == 0
    body = client.get(f"/api/v1/dead-letters/{dl}", headers=auth).get_json()
    [edit] = body["edits"]
    assert edit["key_id"] == key_id(API_KEY) and edit["original"]["grade_level"] == 0
    assert edit["edited"] == student(f"{unique}-h") and edit["at"]
    # a refused payload keeps nothing
    other = store(engine, "students", [student(f"{unique}-i", grade_level=0)])
    [dl2] = bury(engine, other.ids, error="grade_level: Must be between 1 and 12.")
    r = client.post(f"/api/v1/dead-letters/{dl2}/replay", json={"payload": {"student_id": 5}}, headers=auth)
    assert r.status_code == 422 and edits_of(engine, dl2) == []
    assert client.get(f"/api/v1/dead-letters/{dl2}", headers=auth).get_json()["edits"] == []
    page_client = ui_app.test_client()
    sign_in(page_client, KEYS["reader"])
    page = text_of(page_client.get(f"/ui/dead-letters/{dl}"))
    assert "<del>-   &#34;grade_level&#34;: 0,</del>" in page and key_id(API_KEY) in page


def test_replay_and_discard_of_one_dead_letter(operator, engine, unique, api_redis_url, broker_prefix):
    accepted = store(engine, "students", [student(f"{unique}-r"), student(f"{unique}-d")])
    [first, second] = bury(engine, accepted.ids, error="it broke")
    r = post_form(operator, f"/ui/dead-letters/{first}/replay", f"/ui/dead-letters/{first}")
    assert r.status_code == 302 and dead_letter_row(engine, first).status == "replayed"
    assert queue_length(api_redis_url, broker_prefix) == 1
    assert audit_rows(engine, "replay", KEYS["operator"])[-1]["target"] == {"dead_letter_id": first}
    r = post_form(operator, f"/ui/dead-letters/{first}/replay", f"/ui/dead-letters/{first}")  # not open now
    assert r.status_code == 302 and "Nothing done" in text_of(operator.get(r.headers["Location"]))
    r = post_form(operator, f"/ui/dead-letters/{second}/discard", f"/ui/dead-letters/{second}", reason="")
    assert r.status_code == 400 and dead_letter_row(engine, second).status == "open"
    r = post_form(operator, f"/ui/dead-letters/{second}/discard", f"/ui/dead-letters/{second}", reason="a test row")
    assert r.status_code == 302 and dead_letter_row(engine, second).status == "discarded"
    entry = audit_rows(engine, "discard", KEYS["operator"])[-1]
    assert entry["target"] == {"dead_letter_id": second, "reason": "a test row"}


# -- the diff ----------------------------------------------------------------------------------------


def test_the_diff_is_line_by_line_of_the_pretty_json():
    diff = line_diff({"a": 1, "b": [1, 2]}, {"b": [1, 3], "a": 1})
    assert ("same", '  "a": 1,') in diff
    assert ("del", "    2") in diff and ("ins", "    3") in diff
    assert [kind for kind, _ in diff].count("same") == len(diff) - 2
    assert line_diff({"x": 1}, {"x": 1}) == [("same", line) for line in pretty({"x": 1}).splitlines()]


def test_csrf_token_helper_reads_the_page(operator):
    assert csrf_token(operator, "/ui/dead-letters")


def test_an_operators_edit_must_keep_the_natural_key_an_admins_may_change_it(
    operator, ui_app, engine, unique, auth, api_redis_url, broker_prefix
):
    accepted = store(engine, "students", [student(f"{unique}-k", grade_level=99)])
    [dl] = bury(engine, accepted.ids, error="grade_level: Must be between 1 and 12.")
    other_key = student(f"{unique}-victim", grade_level=11)
    # the page: the operator (no submit right) is told, and nothing changes
    r = post_form(operator, f"/ui/dead-letters/{dl}/edit", f"/ui/dead-letters/{dl}", payload=pretty(other_key))
    assert r.status_code == 403
    page = text_of(r)
    assert "natural key student_id" in page and "Nothing was changed" in page
    assert dead_letter_row(engine, dl).status == "open" and edits_of(engine, dl) == []
    assert raw_row(engine, accepted.ids[0]).payload["student_id"] == f"{unique}-k"
    # a key missing from the edit is a change too
    keyless = {k: v for k, v in other_key.items() if k != "student_id"}
    r = post_form(operator, f"/ui/dead-letters/{dl}/edit", f"/ui/dead-letters/{dl}", payload=pretty(keyless))
    assert r.status_code == 403 and edits_of(engine, dl) == []
    # the API: the operator's edit is 403 natural_key_locked, audited as refused
    client = ui_app.test_client()
    op = {"Authorization": f"Bearer {KEYS['operator']}"}
    r = client.post(f"/api/v1/dead-letters/{dl}/replay", json={"payload": other_key}, headers=op)
    assert r.status_code == 403, r.get_json()
    assert r.get_json()["error"] == "natural_key_locked" and r.get_json()["field"] == "student_id"
    assert "submit right" in r.get_json()["message"]
    assert dead_letter_row(engine, dl).status == "open" and edits_of(engine, dl) == []
    assert audit_rows(engine, "edit", KEYS["operator"])[-1]["outcome"] == "refused"
    # keeping the key, the operator's edit goes through
    fixed = student(f"{unique}-k", grade_level=11)
    r = client.post(f"/api/v1/dead-letters/{dl}/replay", json={"payload": fixed}, headers=op)
    assert r.status_code == 202, r.get_json()
    assert [e["edited"] for e in edits_of(engine, dl)] == [fixed]
    # an admin (submit right) may change the key
    second = store(engine, "students", [student(f"{unique}-m", grade_level=99)])
    [dl2] = bury(engine, second.ids, error="grade_level: Must be between 1 and 12.")
    r = client.post(f"/api/v1/dead-letters/{dl2}/replay", json={"payload": other_key}, headers=auth)
    assert r.status_code == 202, r.get_json()
    assert raw_row(engine, second.ids[0]).payload["student_id"] == f"{unique}-victim"
