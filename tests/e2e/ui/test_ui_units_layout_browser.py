"""In a browser, with a real worker: durations read as days and hours (the exact seconds on
hover), the quality tables fit a 1280-pixel page with a long error in them, and the Overview
chart's axis labels stay clear of its legend on a 390-pixel phone."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.ui.conftest import DESKTOP, PHONE
from tests.helpers.payloads import student
from tests.helpers.procs import wait_until
from tests.helpers.support import RUN_ID, fresh_database

pytestmark = pytest.mark.slow

# received about 120 days, 7 hours and 10 minutes after their event: "120d 7h" whatever the
# seconds the pipeline adds
LAG = timedelta(days=120, hours=7, minutes=10)
HUMAN = re.compile(r"^-?(\d+\.\ds|\d+m \d+s|\d+h \d+m|\d+d \d+h)$")
# a field name no type has, long and without a space: the rejections' top error
LONG_FIELD = "an_unexpected_column_exported_by_the_source_system_" + "x" * 150
REJECTED = 12


def exact(title: str | None) -> float:
    """The seconds of a duration's hover text (``10,394,437.25 s``)."""
    assert title and title.endswith(" s"), title
    return float(title.removesuffix(" s").replace(",", ""))


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """This module's own database: the Quality page's top error of a day is the most frequent of
    the whole day, so rejections other modules stored that day must not outnumber this module's."""
    with fresh_database(f"{RUN_ID}_units") as url:
        yield url


@pytest.fixture(scope="module")
def late(api):
    """Students received 120 days after their event, and rejections whose top error is a long
    unknown field; then the daily-quality job run until today's row counts them.
    ``(ingestion id, its report, today)``."""
    tag = "u" + uuid.uuid4().hex[:8]
    event = (datetime.now(UTC) - LAG).isoformat()
    batch = [student(f"{tag}-{i}", event_time=event) for i in range(3)]
    batch += [student(f"{tag}-bad{i}", **{LONG_FIELD: "?"}) for i in range(REJECTED)]
    answer = api.submit("students/batch", batch)
    assert answer["rejected"] == REJECTED
    report = api.wait_settled(answer["ingestion_id"])
    today = api.get(f"records/students/{tag}-0").json()["lineage"]["received_at"][:10]

    def measured():
        days = api.get(f"quality/students?from={today}&to={today}").json()["days"]
        return bool(days) and days[0]["received"] >= len(batch)

    for _ in range(5):  # a run that finds another's lock is "skipped": ask until one counts ours
        r = api.post("jobs/daily-quality/run", {"from": today, "to": today})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if measured():
                return answer["ingestion_id"], report, today
            time.sleep(0.5)
    raise AssertionError("the daily-quality job never measured today's students")


def fits(page, table: str) -> None:
    """Every cell of ``table`` ends inside the viewport, and its scrolling wrapper has nothing
    hidden to the right."""
    width = page.viewport_size["width"]
    cells = page.locator(f"{table} td, {table} th")
    assert cells.count() > 0
    for i in range(cells.count()):
        box = cells.nth(i).bounding_box()
        assert box is not None and box["x"] + box["width"] <= width, (width, cells.nth(i).inner_text()[:60], box)
    wrap = page.locator(table).locator("xpath=ancestor::div[contains(@class,'table-wrap')][1]")
    scroll, client = wrap.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert scroll <= client, f"{table} at {width} px: {scroll} px wide in {client} px"


def test_an_ingestions_timeliness_reads_in_days_and_hours(page, sign_in, late):
    ingestion_id, report, _ = late
    timeliness = report["quality"]["timeliness"]
    sign_in(page, "reader", next_path=f"/ui/ingestions/{ingestion_id}")
    for part in ("p50", "p95", "max"):
        row = page.locator("#scorecard tbody tr", has=page.get_by_role("rowheader", name=f"timeliness {part}"))
        value = row.locator("td").first
        assert value.inner_text() == "120d 7h", part
        assert exact(value.get_attribute("title")) == pytest.approx(timeliness[part], abs=0.001)
    assert page.script_errors == []


def test_the_quality_days_lags_read_in_human_units(page, sign_in, late):
    _, _, today = late
    open_charts(page, sign_in, "/ui/quality?type=students")
    row = page.locator(f"#table-students tr[data-day='{today}']")
    for part in ("p50", "p95"):
        cell = row.locator(f".lag-{part}")
        assert HUMAN.match(cell.inner_text()), cell.inner_text()
        exact(cell.get_attribute("title"))
    assert page.script_errors == []


def test_the_quality_days_table_fits_1280_pixels_with_a_long_top_error(page, sign_in, screenshot, late):
    _, _, today = late
    open_charts(page, sign_in, "/ui/quality?type=students")
    assert LONG_FIELD[:40] in page.locator(f"#table-students tr[data-day='{today}'] .top-error").inner_text()
    fits(page, "#table-students")
    screenshot(page, "quality-days")
    assert page.script_errors == []


def test_an_ingestions_top_errors_fit_1280_pixels_and_a_phone(page, sign_in, late):
    """The longest field name an error can carry (cut at 100 characters) wraps rather than
    pushing the table past the page, on a desktop and on a 390-pixel phone."""
    ingestion_id, _, _ = late
    sign_in(page, "reader", next_path=f"/ui/ingestions/{ingestion_id}")
    assert LONG_FIELD[:40] in page.locator("#top-errors").inner_text()
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        fits(page, "#top-errors")
        fits(page, "#scorecard")
    assert page.script_errors == []


def overlap(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and (a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])
    )


def open_charts(page, sign_in, path: str) -> None:
    """Sign in on a light page, then open ``path``, whose Plotly (4 MB of script) may take a
    loaded machine longer than a page's usual 15 s."""
    sign_in(page, "reader", next_path="/ui/jobs")
    page.goto(path, timeout=90_000)


def labels_clear_the_legend(page, selector: str) -> None:
    """The chart at ``selector``, drawn at the phone's width: its legend inside the page, and no
    axis label (ticks and titles) overlapping it."""
    chart = page.locator(selector)
    wait_until(lambda: chart.get_attribute("data-drawn") == "true", 60, what=f"{selector} to be drawn")
    wait_until(
        lambda: chart.locator("svg.main-svg").first.bounding_box()["width"] <= PHONE["width"],
        60,
        what=f"{selector} to fit the phone",
    )
    legend = chart.locator("g.legend").bounding_box()
    assert legend is not None and legend["x"] >= 0 and legend["x"] + legend["width"] <= PHONE["width"], legend
    labels = chart.locator(".xaxislayer-above text, .yaxislayer-above text, .g-xtitle text, .g-ytitle text")
    shown = [labels.nth(i) for i in range(labels.count()) if labels.nth(i).is_visible()]  # Plotly hides some
    assert len(shown) >= 2
    for label in shown:
        box = label.bounding_box()
        assert box is not None and not overlap(box, legend), (label.text_content(), box, legend)


def test_the_overview_charts_labels_clear_its_legend_on_a_phone(page, sign_in, screenshot):
    page.set_viewport_size(PHONE)
    open_charts(page, sign_in, "/ui/overview")
    labels_clear_the_legend(page, "#throughput")
    screenshot(page, "overview-legend")
    assert page.script_errors == []


def test_the_quality_charts_labels_clear_its_legend_on_a_phone(page, sign_in, late):
    page.set_viewport_size(PHONE)
    open_charts(page, sign_in, "/ui/quality?type=students")
    labels_clear_the_legend(page, "#chart-students")
    assert page.script_errors == []
