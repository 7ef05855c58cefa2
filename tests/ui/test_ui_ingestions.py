"""The Overview and Ingestions pages (etl_app.ui.overview, etl_app.ui.ingestions) and their JSON:
counts and progress bars as GET /api/v1/ingestions/{id} counts them, keyset pages, filters, the
quality scorecard, rejections (escaped, and their CSV) and dead letters. Real PostgreSQL and
Redis, Flask's test client, no worker: records are settled by hand where a test needs it. The
browser tests are tests/e2e/ui/test_ui_ingestions_browser.py."""

from __future__ import annotations

import re
import uuid

import pytest
import sqlalchemy as sa

from etl_app.ingest.listing import BadCursor, decode_cursor, encode_cursor, segments
from etl_app.ui.ingestions import level_of, scorecard

from tests.helpers.dead_letters import make_wait, raw_row, store
from tests.helpers.payloads import session, student, tutor
from tests.helpers.support import API_KEY
from tests.helpers.ui import post_form, sign_in

READER = f"ui-reader-{uuid.uuid4().hex[:8]}"
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def ui_app(make_app):
    return make_app(api_keys=(API_KEY, f"{READER}:reader"))


@pytest.fixture
def browser(ui_app):
    client = ui_app.test_client()
    sign_in(client, READER)
    return client


@pytest.fixture
def api(ui_app, auth):
    client = ui_app.test_client()

    def submit(path: str, payload) -> str:
        r = client.post(f"/api/v1/{path}", json=payload, headers=auth)
        assert r.status_code == 202, r.get_data(as_text=True)
        return r.get_json()["ingestion_id"]

    submit.client = client
    return submit


def settle_by_hand(engine, ingestion_id: str, dead: int = 0) -> None:
    """What the workers would do: the first ``dead`` records dead, the others persisted."""
    with engine.begin() as conn:
        ids = conn.execute(
            sa.text("SELECT id FROM raw_records WHERE ingestion_id = :i ORDER BY id"), {"i": ingestion_id}
        ).scalars()
        ids = list(ids)
        for n, raw_id in enumerate(ids):
            status = "dead" if n < dead else "persisted"
            conn.execute(
                sa.text("UPDATE raw_records SET status = :s, updated_at = now() WHERE id = :id"),
                {"s": status, "id": raw_id},
            )
            if status == "dead":
                conn.execute(
                    sa.text(
                        "INSERT INTO dead_letters (raw_record_id, ingestion_id, record_type, natural_key, payload, "
                        "error_type, error, cause) SELECT id, ingestion_id, record_type, natural_key, payload, "
                        "'validation', :e, 'bad value' FROM raw_records WHERE id = :id"
                    ),
                    {"id": raw_id, "e": f"bad value {SCRIPT}"},
                )


def row_of(page: str, ingestion_id: str) -> str:
    found = re.search(rf'<tr data-id="{ingestion_id}".*?</tr>', page, re.S)
    assert found, f"no row of {ingestion_id}"
    return found.group(0)


def widths(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-segment="(\w+)" style="width: ([\d.]+)%"', html))


# -- the list -----------------------------------------------------------------------------------


def test_the_list_shows_each_ingestion_with_its_bar_counts_and_status_newest_first(browser, api, unique):
    first = api("students/batch", [student(f"{unique}-a")])
    second = api("tutors/batch", [tutor(f"{unique}-1"), tutor(f"{unique}-2"), tutor(f"{unique}-3", email=SCRIPT)])
    page = browser.get("/ui/ingestions").get_data(as_text=True)
    assert page.index(f'data-id="{second}"') < page.index(f'data-id="{first}"')
    row = row_of(page, second)
    assert 'data-status="running"' in row and "once settled" in row
    assert widths(row) == {"persisted": "0.0", "in_flight": "66.67", "dead": "0.0", "rejected": "33.33"}
    assert re.findall(r'data-count="(\w+)">(\d+)<', row) == [
        ("persisted", "0"),
        ("in_flight", "2"),
        ("dead", "0"),
        ("rejected", "1"),
    ]
    assert f'href="/ui/ingestions/{second}"' in row
    # the poll of the running rows answers what GET /api/v1/ingestions/{id} counts
    polled = browser.get(f"/ui/api/ingestions?id={second}&id={first}").get_json()["ingestions"]
    assert [p["id"] for p in polled] == [second, first]
    counts = api.client.get(f"/api/v1/ingestions/{second}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert polled[0]["counts"] == counts.get_json()["counts"]
    assert [(s["name"], s["percent"]) for s in polled[0]["segments"]] == [
        ("persisted", 0.0),
        ("in_flight", 66.67),
        ("dead", 0.0),
        ("rejected", 33.33),
    ]
    assert browser.get("/ui/api/ingestions?id=nope").status_code == 400


def test_a_settled_ingestion_shows_a_full_bar_its_level_and_finished(browser, api, engine, unique):
    ident = api("students/batch", [student(f"{unique}-{i}") for i in range(4)])
    settle_by_hand(engine, ident, dead=1)
    row = row_of(browser.get("/ui/ingestions").get_data(as_text=True), ident)
    assert 'data-status="finished"' in row
    assert widths(row) == {"persisted": "75.0", "in_flight": "0.0", "dead": "25.0", "rejected": "0.0"}
    level = re.search(r'class="badge level-(\w+)"', row).group(1)
    assert level in {"excellent", "good", "fair", "poor", "unusable"}
    polled = browser.get(f"/ui/api/ingestions?id={ident}").get_json()["ingestions"][0]
    assert polled["status"] == "finished" and polled["level"] == level


def test_filters_by_type_and_status(browser, api, engine, unique):
    running = api("students/batch", [student(f"{unique}-r")])
    done = api("students/batch", [student(f"{unique}-d")])
    settle_by_hand(engine, done)
    other = api("tutors/batch", [tutor(f"{unique}-t")])
    page = browser.get("/ui/ingestions?type=students").get_data(as_text=True)
    assert running in page and done in page and other not in page
    assert '<option value="students" selected>' in page
    page = browser.get("/ui/ingestions?type=students&status=running").get_data(as_text=True)
    assert running in page and done not in page
    page = browser.get("/ui/ingestions?status=finished").get_data(as_text=True)
    assert done in page and running not in page and other not in page
    assert other not in browser.get("/ui/ingestions?status=failed").get_data(as_text=True)
    assert browser.get("/ui/ingestions?status=lost").status_code == 400
    assert browser.get("/ui/ingestions?type=nope").status_code == 400


def test_older_pages_follow_a_keyset_cursor(browser, api, unique, monkeypatch):
    monkeypatch.setattr("etl_app.ui.ingestions.DEFAULT_LIMIT", 2)
    made = [api("students/batch", [student(f"{unique}-{i}")]) for i in range(3)]
    page = browser.get("/ui/ingestions?type=students").get_data(as_text=True)
    shown = re.findall(r'<tr data-id="([0-9a-f-]+)"', page)
    assert shown == [made[2], made[1]]
    older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', page).group(1).replace("&amp;", "&")
    assert "cursor=" in older and "type=students" in older and "offset" not in older
    page = browser.get(older).get_data(as_text=True)
    assert re.findall(r'<tr data-id="([0-9a-f-]+)"', page)[0] == made[0]
    assert ">Newest</a>" in page
    assert browser.get("/ui/ingestions?cursor=garbage").status_code == 400


def test_cursor_round_trip_and_segments():
    from datetime import UTC, datetime

    moment, ident = datetime(2026, 11, 30, 12, 0, 1, 5, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(moment, ident)) == (moment, ident)
    for bad in ("x", "2026-11-30T12:00:00~nope", "2026-11-30T12:00:00~" + str(ident)):
        with pytest.raises(BadCursor):
            decode_cursor(bad)
    empty = {"received": 0, "in_flight": 0, "persisted": 0, "dead": 0, "rejected": 0}
    assert [s["percent"] for s in segments(empty)] == [0.0, 0.0, 0.0, 0.0]
    counts = {"received": 3, "in_flight": 0, "persisted": 3, "dead": 0, "rejected": 0}
    assert [s["percent"] for s in segments(counts)] == [100.0, 0.0, 0.0, 0.0]


# -- one ingestion --------------------------------------------------------------------------------


def test_one_ingestion_shows_counts_scorecard_rejections_escaped_and_dead_letters(browser, api, engine, unique):
    batch = [student(f"{unique}-{i}") for i in range(3)] + [
        {"student_id": f"{unique}-x", "name": SCRIPT, "grade_level": 99}
    ]
    ident = api("students/batch", batch)
    r = browser.get(f"/ui/ingestions/{ident}")
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    assert 'data-running="true"' in page and "Measured once the ingestion settles" in page
    assert SCRIPT not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "grade_level" in page and "Download CSV" in page
    settle_by_hand(engine, ident, dead=1)
    page = browser.get(f"/ui/ingestions/{ident}").get_data(as_text=True)
    assert 'data-running="false"' in page
    assert widths(page) == {"persisted": "50.0", "in_flight": "0.0", "dead": "25.0", "rejected": "25.0"}
    card = re.search(r'<table id="scorecard">.*?</table>', page, re.S).group(0)
    assert re.search(
        r"<th scope=\"row\">validity</th><td class=\"num\">0\.7500</td><td><span class=\"badge level-fair\"", card
    )
    for metric in ("completeness (overall)", "uniqueness", "integrity", "timeliness p50", "score"):
        assert f'<th scope="row">{metric}</th>' in card
    assert "bad value &lt;script&gt;" in page and SCRIPT not in page  # the dead letter's error
    detail = browser.get(f"/ui/api/ingestions/{ident}").get_json()
    assert detail["status"] == "finished" and detail["counts"]["dead"] == 1
    assert detail["scorecard"][3] == {"metric": "validity", "value": "0.7500", "level": "fair", "title": None}
    assert any(e["field"] == "grade_level" for e in detail["top_errors"])


def test_the_rejections_page_by_keyset_and_their_csv_is_the_apis(browser, api, ui_app, unique, monkeypatch, auth):
    monkeypatch.setattr("etl_app.ui.ingestions.REJECTIONS_PER_PAGE", 2)
    batch = [student(f"{unique}-ok")] + [{"student_id": f"{unique}-{i}", "grade_level": 99} for i in range(3)]
    ident = api("students/batch", batch)
    page = browser.get(f"/ui/ingestions/{ident}").get_data(as_text=True)
    rejections = re.search(r'<table id="rejections">.*?</table>', page, re.S).group(0)
    assert f"{unique}-0" in rejections and f"{unique}-1" in rejections and f"{unique}-2" not in rejections
    more = re.search(r'<a href="([^"]+)#rejections" rel="next">More rejections</a>', page).group(1)
    assert more == f"/ui/ingestions/{ident}?rejections_from=3"
    page = browser.get(more).get_data(as_text=True)
    rejections = re.search(r'<table id="rejections">.*?</table>', page, re.S).group(0)
    assert f"{unique}-2" in rejections and f"{unique}-0" not in rejections
    csv = browser.get(f"/ui/ingestions/{ident}/rejections.csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    body = csv.get_data()  # read the stream before the next request
    expected = ui_app.test_client().get(f"/api/v1/ingestions/{ident}/rejections?format=csv", headers=auth)
    assert body == expected.get_data() and body.count(b"\n") == 4
    assert browser.get(f"/ui/ingestions/{uuid.uuid4()}/rejections.csv").status_code == 404


def test_unknown_ingestions_are_404(browser):
    assert browser.get(f"/ui/ingestions/{uuid.uuid4()}").status_code == 404
    assert browser.get("/ui/ingestions/not-a-uuid").status_code == 404
    assert browser.get(f"/ui/api/ingestions/{uuid.uuid4()}").status_code == 404


def test_scorecard_levels():
    assert [level_of(v) for v in (None, 1.0, 0.95, 0.9, 0.7, 0.5, 0.49)] == [
        None,
        "excellent",
        "excellent",
        "good",
        "fair",
        "poor",
        "unusable",
    ]
    assert scorecard(None) == []


# -- the overview ---------------------------------------------------------------------------------


def test_the_overview_counts_the_last_hour_per_minute_and_the_backlog(browser, api, engine, unique):
    before = browser.get("/ui/api/overview").get_json()
    ident = api("students/batch", [student(f"{unique}-{i}") for i in range(3)] + [{"student_id": "bad id!"}])
    settle_by_hand(engine, ident, dead=1)
    data = browser.get("/ui/api/overview").get_json()
    assert len(data["minutes"]) == 60
    assert data["totals"]["persisted"] - before["totals"]["persisted"] >= 2
    assert data["totals"]["rejected"] - before["totals"]["rejected"] >= 1
    assert data["totals"]["dead"] - before["totals"]["dead"] >= 1
    assert data["open_dead_letters"] >= 1
    assert {q["queue"] for q in data["queues"]} >= {"etl", "unacked"} and data["queue_error"] is None
    assert {j["name"] for j in data["jobs"]} >= {"retention", "daily-quality"}
    assert set(data["workers"]) == {"names", "checked_at", "error"}
    page = browser.get("/ui/overview").get_data(as_text=True)
    assert 'id="throughput"' in page and "/ui/assets/plotly.min.js" in page
    assert '<table id="per-minute">' in page and page.count('<th scope="row">') >= 60
    assert "Flower" in page and "<script>" not in page


def test_the_page_of_an_ingestion_with_huge_rejections_stays_small(browser, ui_app, engine, auth, unique):
    """Sixty rejections of 300 KB each (stored before values were cut: written here by hand) and
    a value cut when stored: the page shows 25, each cut short, and both downloads."""
    ident = uuid.uuid4()
    huge = "y" * 300_000
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ingestions (id, record_type, source, rejected, rejections_not_stored) "
                "VALUES (:id, 'students', 'batch', 1000, 940)"
            ),
            {"id": ident},
        )
        conn.execute(
            sa.text(
                "INSERT INTO rejections (ingestion_id, record_type, position, natural_key, raw, errors) "
                "SELECT :id, 'students', n, :k || n, "
                "jsonb_build_object('student_id', :k || n, 'name', CAST(:v AS text)), "
                "jsonb_build_object('name', jsonb_build_array(CAST(:v AS text))) FROM generate_series(0, 59) AS n"
            ),
            {"id": ident, "k": unique, "v": huge},
        )
    r = browser.get(f"/ui/ingestions/{ident}")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and len(page) < 200_000  # 60 × 600 KB stored
    rejections = re.search(r'<table id="rejections">.*?</table>', page, re.S).group(0)
    assert rejections.count("<tr>") == 1 + 25 and rejections.count('class="badge"') == 25  # each marked cut
    assert "940 of them were counted but not stored" in page
    assert "Download CSV" in page and "Download XLSX" in page
    xlsx = browser.get(f"/ui/ingestions/{ident}/rejections.xlsx")
    assert xlsx.status_code == 200 and xlsx.headers["X-Rejections-Not-Stored"] == "940"
    assert xlsx.get_data()[:2] == b"PK"  # a zip: the workbook
    item = ui_app.test_client().get(f"/api/v1/ingestions/{ident}/rejections?limit=1", headers=auth).get_json()
    assert item["rejections"][0]["raw_truncated"] is True and len(item["rejections"][0]["raw"]) < 70_000


def test_only_the_expected_fields_shares_have_a_level_on_the_scorecard():
    quality = {
        "received": 2, "accepted": 2, "rejected": 0, "validity": 1.0, "uniqueness": 1.0, "integrity": 1.0,
        "completeness": {"student_id": 1.0, "name": 0.0, "grade_level": 0.5, "overall": 0.5},
        "timeliness": None, "score": 0.875, "level": "good",
    }  # fmt: skip
    rows = {r["metric"]: r for r in scorecard(quality, frozenset({"grade_level"}))}
    assert rows["completeness · grade_level (expected)"] == {
        "metric": "completeness · grade_level (expected)", "value": "0.5000", "level": "poor", "title": None,
    }  # fmt: skip
    assert rows["completeness · name"]["level"] is None  # not expected: it lowers nothing
    assert rows["completeness · student_id"]["level"] is None
    assert rows["completeness (overall)"]["level"] == "poor"


# -- records waiting for their parents ------------------------------------------------------------


def test_an_operator_gives_up_on_an_ingestions_waiting_records_and_a_reader_only_sees_them(ui_app, engine, unique):
    reader = ui_app.test_client()
    sign_in(reader, READER)
    before = reader.get("/ui/api/overview").get_json()["waiting_for_parents"]
    accepted = store(engine, "sessions", [session(f"{unique}-S{i}", f"{unique}-T", f"{unique}-ST") for i in range(2)])
    make_wait(engine, "sessions", accepted.ids)
    path = f"/ui/ingestions/{accepted.ingestion_id}"

    assert reader.get("/ui/api/overview").get_json()["waiting_for_parents"] == before + 2
    assert "Waiting for parents" in reader.get("/ui/overview").get_data(as_text=True)
    page = reader.get(path).get_data(as_text=True)
    assert re.search(r'id="waiting-count">2</strong> records waiting for parents', page)
    assert "Give up now" not in page
    assert post_form(reader, f"{path}/give-up", path).status_code == 403
    assert [raw_row(engine, i).status for i in accepted.ids] == ["received", "received"]

    operator = ui_app.test_client()
    sign_in(operator, API_KEY)
    assert "Give up now" in operator.get(path).get_data(as_text=True)
    r = post_form(operator, f"{path}/give-up", path)
    assert r.status_code == 302 and r.headers["Location"] == path
    page = operator.get(path).get_data(as_text=True)
    assert "Gave up on 2 waiting records" in page and 'id="waiting"' not in page
    assert [raw_row(engine, i).status for i in accepted.ids] == ["dead", "dead"]
    assert reader.get("/ui/api/overview").get_json()["waiting_for_parents"] == before
    assert page.count("missing_parent") >= 2  # the dead letters' table of the page
    with engine.connect() as conn:
        outcomes = conn.execute(
            sa.text("SELECT outcome, count FROM audit WHERE action = 'give_up' AND target->>'ingestion_id' = :i"),
            {"i": str(accepted.ingestion_id)},
        ).all()
    assert sorted(tuple(o) for o in outcomes) == [("ok", 2), ("refused", None)]
