"""In a browser, with a real worker: an ingestion's bar moves to 100 % on its page and in the
list without a reload, its record values show as text, and the overview draws its chart from data."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers.payloads import session, student, tutor

pytestmark = pytest.mark.slow

SCRIPT = "<script>alert(1)</script>"


def width(page, selector: str) -> str:
    return page.locator(selector).evaluate("el => el.style.width")


def test_an_ingestions_bar_reaches_100_percent_on_its_page_without_a_reload(page, sign_in, api, screenshot):
    unique = "ui" + uuid.uuid4().hex[:10]
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    # sessions whose tutor and student are not there yet: they wait for them, so the page opens running
    batch = [session(f"{unique}-s{i}", f"{unique}-t", f"{unique}-st", session_number=i + 1) for i in range(5)]
    ingestion_id = api.submit("sessions/batch", batch)["ingestion_id"]
    sign_in(page, "reader", next_path=f"/ui/ingestions/{ingestion_id}")
    head = page.locator("#ingestion")
    assert head.get_attribute("data-status") == "running"
    assert width(page, "#ingestion [data-segment=persisted]") != "100%"
    loaded = page.evaluate("performance.timeOrigin")
    api.submit("tutors", tutor(f"{unique}-t"))
    api.submit("students", student(f"{unique}-st"))
    page.wait_for_function("() => document.querySelector('#ingestion').dataset.status === 'finished'", timeout=60_000)
    assert page.evaluate("performance.timeOrigin") == loaded  # the same document: no reload
    counts = {name: page.locator(f"#ingestion [data-count={name}]").inner_text() for name in ("persisted", "dead")}
    assert counts == {"persisted": "5", "dead": "0"}
    assert width(page, "#ingestion [data-segment=persisted]") == "100%"
    assert width(page, "#ingestion [data-segment=in_flight]") == "0%"
    assert head.locator(".status .badge").inner_text() == "finished"
    assert page.locator("#scorecard").is_visible()
    assert page.locator("#scorecard tbody tr").count() >= 10
    screenshot(page, "ingestion")
    # a rejected value holding a script is text on the page, never run
    batch = [student(f"{unique}-ok"), {"student_id": f"{unique}-bad", "name": SCRIPT, "grade_level": 99}]
    rejected = api.submit("students/batch", batch)["ingestion_id"]
    page.goto(f"/ui/ingestions/{rejected}")
    assert SCRIPT in page.locator("#rejections").inner_text()
    assert page.locator("#rejections script").count() == 0
    assert dialogs == []
    assert page.script_errors == []


def test_a_fully_persisted_ingestion_is_100_percent_in_the_list(page, sign_in, api, screenshot):
    unique = "ui" + uuid.uuid4().hex[:10]
    batch = [session(f"{unique}-s{i}", f"{unique}-t", f"{unique}-st", session_number=i + 1) for i in range(4)]
    ingestion_id = api.submit("sessions/batch", batch)["ingestion_id"]
    sign_in(page, "reader", next_path="/ui/ingestions?type=sessions")
    row = page.locator(f"#ingestions tr[data-id='{ingestion_id}']")
    assert row.get_attribute("data-status") == "running"
    api.submit("tutors", tutor(f"{unique}-t"))
    api.submit("students", student(f"{unique}-st"))
    page.wait_for_function(
        "(id) => document.querySelector(`#ingestions tr[data-id='${id}']`).dataset.status === 'finished'",
        arg=ingestion_id,
        timeout=60_000,
    )
    assert row.locator("[data-segment=persisted]").evaluate("el => el.style.width") == "100%"
    assert row.locator("[data-count=persisted]").inner_text() == "4"
    assert row.locator(".level .badge").inner_text() in {"excellent", "good", "fair", "poor", "unusable"}
    screenshot(page, "ingestions")
    assert page.script_errors == []


def test_the_overview_draws_the_last_hours_records(page, sign_in, api, screenshot):
    unique = "ui" + uuid.uuid4().hex[:10]
    ingestion_id = api.submit("students/batch", [student(f"{unique}-{i}") for i in range(3)])["ingestion_id"]
    api.wait_finished(ingestion_id)
    sign_in(page, "reader", next_path="/ui/overview")
    page.locator("#throughput[data-drawn=true]").wait_for(timeout=15_000)
    persisted = page.evaluate(
        "() => document.getElementById('throughput').data"
        ".find((t) => t.name === 'persisted').y.reduce((a, b) => a + b, 0)"
    )
    assert persisted >= 3
    assert int(page.locator("[data-total=persisted]").inner_text().replace(",", "")) >= 3
    page.locator("summary", has_text="as a table").click()
    assert page.locator("#per-minute tbody tr").count() == 60
    # workers are asked in the background: the count appears by the next poll
    page.wait_for_function(
        "() => /^[1-9]/.test(document.querySelector('[data-stat=workers]').textContent)", timeout=20_000
    )
    assert page.locator("#queues tr[data-queue=etl]").count() == 1
    # backpressure: the default bounds, far from reached; the poll keeps the figure and the banner hidden
    assert page.locator("[data-stat=backpressure]").inner_text() == "accepting"
    assert "bounds: 1,000,000 records · 1h 0m" in page.locator("[data-stat=backpressure_bounds]").inner_text()
    assert page.locator("#backlog-full").is_hidden()
    screenshot(page, "overview")
    assert page.script_errors == []
