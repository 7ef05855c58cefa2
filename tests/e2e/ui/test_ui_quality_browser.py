"""In a browser, against gunicorn and a real worker: the Quality page draws its chart from the
daily-quality job's rows, and a landed record's page shows its timeline."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.helpers.payloads import student
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def landed(api):
    """Students landed by the worker (one refused), then the daily-quality job run through the
    API until today's row counts them; ``(keys, today's row as the API serves it)``."""
    tag = "q" + uuid.uuid4().hex[:8]
    keys = [f"{tag}-1", f"{tag}-2"]
    batch = [student(keys[0]), student(keys[1], name="<script>alert(1)</script>"), student(f"{tag}-3", grade_level=99)]
    answer = api.submit("students/batch", batch)
    assert answer["rejected"] == 1
    api.wait_settled(answer["ingestion_id"])
    # the day the records were received (UTC), not the clock's: a run that crosses midnight
    # measures the day they belong to
    today = api.get(f"records/students/{keys[0]}").json()["lineage"]["received_at"][:10]

    def measured():
        days = api.get(f"quality/students?from={today}&to={today}").json()["days"]
        return days[0] if days and days[0]["received"] >= 3 else None

    # a run that finds another run's lock is recorded "skipped": ask again until one counts ours
    for _ in range(5):
        r = api.post("jobs/daily-quality/run", {"from": today, "to": today})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            row = measured()
            if row is not None:
                return keys, row
            time.sleep(0.5)
    raise AssertionError("the daily-quality job never measured today's students")


def test_the_quality_chart_is_drawn_from_the_jobs_rows(page, sign_in, screenshot, landed, api):
    _, today = landed
    day = today["day"]

    def stored() -> dict:
        """Today's row as the API serves it now: records of the other end-to-end modules share
        the database, and a later run of the job may have measured them too."""
        return api.get(f"quality/students?from={day}&to={day}").json()["days"][0]

    def drawn() -> None:
        chart = page.locator("#chart-students")
        chart.wait_for()
        wait_until(lambda: chart.get_attribute("data-drawn") == "true", 15, what="the chart to be drawn")

    def shown() -> tuple[str, ...]:
        row = page.locator(f"#table-students tr[data-day='{day}']")
        return tuple(row.locator(f".{name}").inner_text() for name in ("level", "score", "validity", "received"))

    def expected(at: dict) -> tuple[str, ...]:
        return (at["level"], f"{at['score']:.4f}", f"{at['validity']:.4f}", f"{at['received']:,}")

    sign_in(page, "reader", next_path="/ui/quality?type=students")
    drawn()
    chart = page.locator("#chart-students")
    assert chart.locator(".scatterlayer .trace").count() == 5  # score and the four shares
    assert chart.locator(".scatterlayer .trace path").count() >= 1
    assert chart.locator(".legendtext").first.text_content() == "score"

    for _ in range(3):  # the page against the row stored when it was drawn (a job run may land between)
        before = stored()
        if shown() == expected(before) or shown() == expected(stored()):
            break
        page.reload()
        drawn()
    else:
        raise AssertionError(f"the page shows {shown()}, the stored row is {expected(stored())}")
    screenshot(page, "quality")
    assert page.script_errors == []


def test_a_landed_record_shows_its_values_and_timeline(page, sign_in, screenshot, landed):
    keys, _ = landed
    sign_in(page, "reader", next_path="/ui/records")
    page.get_by_label("Record type").select_option("students")
    page.get_by_label("Natural key").fill(keys[1])
    page.get_by_role("button", name="Look up").click()
    page.wait_for_url(f"**/ui/records/students/{keys[1]}")
    assert page.locator("#fields tr[data-field='name'] td").inner_text() == "<script>alert(1)</script>"
    entry = page.locator("#timeline li.entry")
    assert entry.count() == 1 and entry.get_attribute("data-status") == "persisted"
    steps = entry.locator(".step .label").all_inner_texts()
    assert steps == ["received", "persisted"]
    assert entry.locator(".badge.stored-version").is_visible()
    screenshot(page, "record")
    page.goto("/ui/records/students/" + keys[1] + "-nope")
    assert "is stored (yet)" in page.get_by_role("alert").inner_text()
    assert page.script_errors == []
