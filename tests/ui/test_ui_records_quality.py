"""The operator's Record lookup and Quality pages (etl_app.ui.records, etl_app.ui.quality) on the
real database, through Flask's test client: records landed through the API and the pipeline
functions (no worker), daily-quality rows written as the job writes them. The browser test is
tests/e2e/ui/test_ui_quality_browser.py."""

from __future__ import annotations

import html
import re
import uuid
from datetime import date, timedelta

import orjson
import pytest
import sqlalchemy as sa

from etl_app.pipeline.persist import persist_chunk
from etl_app.quality import METRIC_COLUMNS
from etl_app.record_types import get_registry
from etl_app.ui.records import shown

from tests.helpers.dead_letters import bury, enriched_chunk, land
from tests.helpers.payloads import student, tutor
from tests.helpers.support import API_KEY
from tests.helpers.ui import sign_in

READER = f"ui-reader-{uuid.uuid4().hex[:8]}"
SCRIPT = "<script>alert(1)</script>"
# Days no other test measures: the quality rows of these tests.
DAY = date(1983, 3, 7)
ERROR_SHOWN = "grade_level: <i>too high</i> (1)"


@pytest.fixture
def ui(make_app):
    client = make_app(api_keys=(API_KEY, f"{READER}:reader")).test_client()
    assert sign_in(client, READER).status_code == 302
    return client


def text_of(fragment: str) -> str:
    """The text of an HTML fragment (tags dropped, entities decoded, white space folded)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def cell(page: str, field: str) -> str:
    """The escaped value cell of the row of ``field`` in the record's tables."""
    found = re.search(rf'<tr data-field="{re.escape(field)}">.*?<td class="value[^"]*">(.*?)</td>', page, re.S)
    assert found, field
    return found.group(1)


def persist(engine, raw_ids):
    chunk = enriched_chunk(engine, "tutors", raw_ids)
    with engine.begin() as conn:
        persist_chunk(conn, get_registry()["tutors"], chunk["items"])


@pytest.fixture
def tutor_with_history(client, auth, engine, unique):
    """Key ``unique``: refused in a batch, then accepted with a hostile name, dead-lettered,
    replayed with an edit by the admin key and persisted; then sent again, still in flight."""
    refused = tutor(unique, status="retired-ish")
    r = client.post("/api/v1/tutors/batch", json=[tutor(f"{unique}-x"), refused], headers=auth)
    assert r.status_code == 202 and r.get_json()["rejected"] == 1, r.get_json()
    r = client.post("/api/v1/tutors", json=tutor(unique, name="Bad Name", location="Lyon"), headers=auth)
    assert r.status_code == 202, r.get_json()
    with engine.connect() as conn:
        [raw_id] = conn.execute(
            sa.text("SELECT id FROM raw_records WHERE record_type = 'tutors' AND natural_key = :k"), {"k": unique}
        ).scalars()
    [dl_id] = bury(engine, [raw_id], error="name: <b>not a name</b>")
    fixed = tutor(unique, name=SCRIPT, location="Lyon")
    r = client.post(f"/api/v1/dead-letters/{dl_id}/replay", json={"payload": fixed}, headers=auth)
    assert r.status_code == 202, r.get_json()
    persist(engine, [raw_id])
    r = client.post("/api/v1/tutors", json=tutor(unique, name="Later"), headers=auth)
    assert r.status_code == 202, r.get_json()
    return {"key": unique, "raw_id": raw_id, "dead_letter_id": dl_id}


def test_the_record_page_shows_the_stored_and_derived_values_of_the_api(ui, client, auth, tutor_with_history):
    key = tutor_with_history["key"]
    api = client.get(f"/api/v1/records/tutors/{key}", headers=auth).get_json()
    r = ui.get(f"/ui/records/tutors/{key}")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert "<title>tutors · " in page
    for name, value in api["fields"].items():
        assert text_of(cell(page, name)) == shown(value), name
    assert api["derived"]  # tutors derive tenure, experience level, subject count…
    for name in ("tenure_days", "is_new_tutor", "experience_level", "subject_count", "is_active_today"):
        assert text_of(cell(page, name)) == shown(api["derived"][name]), name
    assert text_of(cell(page, "is_new_tutor")) in ("true", "false")
    assert "Lyon" in cell(page, "location")
    # the record as JSON, in a <pre>, escaped
    pre = re.search(r'<pre id="record-json">(.*?)</pre>', page, re.S).group(1)
    assert "<" not in pre
    assert orjson.loads(html.unescape(pre))["derived"]["experience_level"] == api["derived"]["experience_level"]


@pytest.fixture
def students_keep_unknown_fields():
    """The process's students keep unknown fields (as ETL_SCHEMA_CONTRACT would say), for this test."""
    get_registry().apply_contracts("students:unknown=keep")
    yield
    get_registry().apply_contracts("")


def test_the_record_page_shows_kept_unknown_fields_as_text_apart_from_the_typed_ones(
    ui, client, auth, engine, unique, students_keep_unknown_fields
):
    land(engine, "students", [student(unique, shoe_size=38, note=SCRIPT)])
    api = client.get(f"/api/v1/records/students/{unique}", headers=auth).get_json()
    assert api["extra"] == {"shoe_size": 38, "note": SCRIPT}
    page = ui.get(f"/ui/records/students/{unique}").get_data(as_text=True)
    extra = re.search(r'<table id="extra".*?</table>', page, re.S).group(0)
    assert text_of(cell(extra, "shoe_size")) == "38"
    assert cell(extra, "note") == "&lt;script&gt;alert(1)&lt;/script&gt;" and SCRIPT not in page
    fields = re.search(r'<table id="fields">.*?</table>', page, re.S).group(0)
    assert 'data-field="shoe_size"' not in fields and 'data-field="grade_level"' in fields


def test_a_record_with_no_kept_fields_shows_no_such_table(ui, tutor_with_history):
    page = ui.get(f"/ui/records/tutors/{tutor_with_history['key']}").get_data(as_text=True)
    assert 'id="extra"' not in page


def test_a_hostile_value_is_shown_as_text_never_as_markup(ui, tutor_with_history):
    page = ui.get(f"/ui/records/tutors/{tutor_with_history['key']}").get_data(as_text=True)
    assert SCRIPT not in page and "<b>not a name</b>" not in page
    assert cell(page, "name") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert "name: &lt;b&gt;not a name&lt;/b&gt;" in page  # the dead letter's error, in the timeline
    assert "<script>" not in page  # no inline script of ours either


def test_the_timeline_lists_rejection_dead_letter_replay_persisted_and_in_flight_in_order(ui, tutor_with_history):
    page = ui.get(f"/ui/records/tutors/{tutor_with_history['key']}").get_data(as_text=True)
    timeline = re.search(r'<ol class="timeline" id="timeline".*?</ol>\s*</section>', page, re.S).group(0)
    assert re.findall(r'<li class="entry [^"]*" data-status="(\w+)"', timeline) == ["rejected", "persisted", "received"]
    entries = re.split(r'<li class="entry ', timeline)[1:]
    assert "Rejection " in entries[0] and "status" in text_of(entries[0])
    assert re.findall(r'data-step="(\w+)"', entries[0]) == ["rejected"]
    stored = entries[1]
    assert f"Raw record {tutor_with_history['raw_id']}" in stored and "stored version" in stored
    assert re.findall(r'data-step="(\w+)"', stored) == ["received", "dead", "replay", "persisted"]
    assert "edited and replayed" in stored and f"dead letter {tutor_with_history['dead_letter_id']}" in stored
    assert re.findall(r'data-step="(\w+)"', entries[2]) == ["received", "in_flight"]
    assert "not settled yet; 0 attempts so far" in text_of(entries[2])
    times = [t for t in re.findall(r'<time class="at">([^<]*)</time>', timeline) if t != "—"]
    assert times == sorted(times)
    lineage = text_of(re.search(r'<dl class="card lineage".*?</dl>', page, re.S).group(0))
    assert "Source replay (ingestion by api)" in lineage


def test_an_unknown_key_or_type_is_a_404_page_that_names_it_escaped(ui, unique):
    r = ui.get(f"/ui/records/tutors/{unique}%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert r.status_code == 404
    page = r.get_data(as_text=True)
    assert f"No tutors record with tutor_id &#39;{unique}&lt;script&gt;alert(1)&lt;/script&gt;&#39;" in page
    assert SCRIPT not in page
    assert 'id="record-key"' in page  # the form, to try again
    r = ui.get("/ui/records/nope/x")
    assert r.status_code == 404 and "There is no record type &#39;nope&#39;" in r.get_data(as_text=True)


def test_the_lookup_form_sends_to_the_record_page(ui, unique):
    page = ui.get("/ui/records").get_data(as_text=True)
    assert '<option value="tutors" data-key="tutor_id"' in page and "Look up" in page
    r = ui.get(f"/ui/records?type=students&key={unique}/a b")
    assert r.status_code == 302 and r.headers["Location"] == f"/ui/records/students/{unique}/a%20b"


def test_pages_need_a_session(client):
    assert client.get("/ui/records/tutors/x").status_code == 302
    assert client.get("/ui/quality").status_code == 302
    assert client.get("/ui/api/quality").status_code == 401


# -- Quality ---------------------------------------------------------------------------------------


def quality_row(day: date, score: float, level: str, **over) -> dict:
    row = {
        "record_type": "students",
        "day": day,
        "received": 10,
        "accepted": 9,
        "rejected": 1,
        "validity": 0.9,
        "completeness": orjson.dumps({"student_id": 1.0, "name": 0.5, "overall": 0.6667}).decode(),
        "uniqueness": 1.0,
        "integrity": 1.0,
        "timeliness_p50": 12.5,
        "timeliness_p95": 40.0,
        "timeliness_max": 60.0,
        "score": score,
        "level": level,
        "top_errors": orjson.dumps([{"field": "grade_level", "message": "<i>too high</i>", "count": 1}]).decode(),
        **over,
    }
    assert set(row) == {"record_type", "day", *METRIC_COLUMNS}
    return row


@pytest.fixture
def quality_days(engine):
    rows = [
        quality_row(DAY, 0.8917, "good"),
        quality_row(DAY + timedelta(days=1), 0.6125, "poor", validity=0.5, accepted=5, rejected=5),
        quality_row(DAY + timedelta(days=2), 0.9667, "excellent", timeliness_p50=None, timeliness_p95=None,
                    timeliness_max=None, top_errors="[]"),
    ]  # fmt: skip
    columns = ", ".join(rows[0])
    values = ", ".join(f"CAST(:{c} AS jsonb)" if c in ("completeness", "top_errors") else f":{c}" for c in rows[0])
    ours = {"a": DAY, "b": DAY + timedelta(days=9)}
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM daily_quality WHERE day BETWEEN :a AND :b"), ours)
        conn.execute(sa.text(f"INSERT INTO daily_quality ({columns}) VALUES ({values})"), rows)
    yield rows
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM daily_quality WHERE day BETWEEN :a AND :b"), ours)


def test_the_quality_page_charts_and_tabulates_each_day_with_its_level(ui, quality_days):
    r = ui.get(f"/ui/quality?type=students&from={DAY}&to={DAY + timedelta(days=9)}")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert "<script>" not in page and "plotly.min.js" in page and "quality.js" in page
    chart = re.search(r"data-series='([^']*)'", page).group(1)
    series = orjson.loads(html.unescape(chart))
    assert series["day"] == ["1983-03-07", "1983-03-08", "1983-03-09"]
    assert series["level"] == ["good", "poor", "excellent"]
    assert series["score"] == [0.8917, 0.6125, 0.9667]
    assert series["validity"] == [0.9, 0.5, 0.9] and series["completeness"] == [0.6667] * 3
    table = re.search(r'<table class="quality-days" id="table-students">.*?</table>', page, re.S).group(0)
    rows = re.findall(r'<tr data-day="([^"]+)">(.*?)</tr>', table, re.S)
    assert [day for day, _ in rows] == ["1983-03-09", "1983-03-08", "1983-03-07"]  # newest first
    first = text_of(rows[2][1])
    assert first == "1983-03-07 good 0.8917 0.9000 0.6667 1.0000 1.0000 10 9 1 12.5s 40.0s " + ERROR_SHOWN
    assert '<td class="num lag-p95" title="40 s">40.0s</td>' in rows[2][1]  # the exact seconds on hover
    assert "&lt;i&gt;too high&lt;/i&gt;" in rows[2][1]
    assert text_of(rows[1][1]).startswith("1983-03-08 poor 0.6125 0.5000")
    assert text_of(rows[0][1]).endswith("— — —")  # no event time, no error
    assert 'class="badge level-excellent"' in rows[0][1]
    # every type when none is chosen: the others have no day in this range
    page = ui.get(f"/ui/quality?from={DAY}&to={DAY + timedelta(days=9)}").get_data(as_text=True)
    assert 'id="chart-students"' in page and "No day of tutors measured from 1983-03-07 to 1983-03-16" in page


def test_the_quality_json_is_the_same_days(ui, quality_days):
    body = ui.get(f"/ui/api/quality?type=students&from={DAY}&to={DAY + timedelta(days=2)}").get_json()
    [students] = body["types"]
    assert [d["level"] for d in students["days"]] == ["good", "poor", "excellent"]
    assert students["days"][0]["timeliness"] == {"p50": 12.5, "p95": 40.0, "max": 60.0}


def test_the_default_range_is_the_last_30_days(ui):
    page = ui.get("/ui/quality?from=&to=").get_data(as_text=True)
    start = re.search(r'id="quality-from" name="from" type="date" value="([^"]+)"', page).group(1)
    end = re.search(r'id="quality-to" name="to" type="date" value="([^"]+)"', page).group(1)
    assert (date.fromisoformat(end) - date.fromisoformat(start)).days == 29


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=07.03.1983", "from: &#39;07.03.1983&#39; is not a day"),
        ("to=1983-02-30", "to: &#39;1983-02-30&#39; is not a day"),
        ("from=<script>", "from: &#39;&lt;script&gt;&#39; is not a day"),
        ("from=1983-03-07&to=1983-03-06", "The range ends (1983-03-06) before it starts (1983-03-07)."),
        ("from=1983-01-01&to=1984-01-02", "A range covers at most 366 days; this one has 367."),
    ],
)
def test_a_bad_range_is_a_400_page_that_says_why(ui, query, message):
    r = ui.get(f"/ui/quality?{query}")
    assert r.status_code == 400
    page = r.get_data(as_text=True)
    assert message in page and "<script>" not in page
    assert 'id="quality-from"' in page  # the form, to correct it
    assert ui.get(f"/ui/api/quality?{query}").status_code == 400


def test_an_unknown_type_on_the_quality_page_is_404(ui):
    r = ui.get("/ui/quality?type=nope")
    assert r.status_code == 404 and "There is no record type &#39;nope&#39;" in r.get_data(as_text=True)


def test_a_key_that_never_landed_shows_its_history_without_a_row(ui, engine, unique):
    """A dead-lettered key has no row in its table: the page says so and shows its timeline."""
    from tests.helpers.dead_letters import dead

    key = f"{unique}-dead"
    _, [dead_letter_id] = dead(engine, "tutors", [tutor(key)])
    r = ui.get(f"/ui/records/tutors/{key}")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert 'id="not-stored"' in page and 'id="lineage"' not in page
    assert f'<a href="/ui/dead-letters/{dead_letter_id}">dead letter {dead_letter_id}</a>' in page
    assert re.findall(r'data-status="(\w+)"', page) == ["dead"]
    assert re.search(r'ingestion <a href="/ui/ingestions/[0-9a-f-]{36}">', page)
