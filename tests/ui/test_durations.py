"""Durations read the same on the command line and on the pages: one table of cases, checked
against etl_app.durations and against what each place prints (the CLI's quality report, the
Ingestion page's scorecard, the templates' ``duration`` filter, the Overview's oldest age)."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from etl_app import durations
from etl_app.cli.submit import print_report
from etl_app.ui.blueprint import duration, exact_seconds
from etl_app.ui.ingestions import scorecard
from etl_app.ui.overview import age_text

pytestmark = pytest.mark.unit

# (seconds, as shown): whole units elapsed, like a clock; tenths under a minute
CASES = [
    (0, "0.0s"),
    (0.04, "0.0s"),
    (-0.04, "0.0s"),
    (2.3, "2.3s"),
    (5, "5.0s"),
    (42.75, "42.7s"),
    (59.99, "59.9s"),
    (60, "1m 0s"),
    (200, "3m 20s"),
    (3599.9, "59m 59s"),
    (3600, "1h 0m"),
    (7199, "1h 59m"),
    (7500, "2h 5m"),
    (86399.99, "23h 59m"),
    (86400, "1d 0h"),
    (90000, "1d 1h"),
    (172800, "2d 0h"),
    (10_394_437.25, "120d 7h"),
    (10_891_463.5, "126d 1h"),
    (-2.3, "-2.3s"),
    (-90, "-1m 30s"),
    (-3600.5, "-1h 0m"),
]
EXACT = [
    (10_394_437.25, "10,394,437.25 s"),
    (60, "60 s"),
    (12.3456, "12.346 s"),
    (-2.5, "-2.5 s"),
    (0.0004, "0 s"),
    (-0.0004, "0 s"),
]


@pytest.mark.parametrize(("seconds", "shown"), CASES)
def test_a_duration_reads_in_at_most_two_units(seconds, shown):
    assert durations.human(seconds) == shown


@pytest.mark.parametrize(("seconds", "shown"), EXACT)
def test_the_exact_seconds_are_kept_to_the_millisecond(seconds, shown):
    assert durations.exact(seconds) == shown


def test_a_value_that_is_no_finite_number_is_shown_as_it_comes():
    assert durations.human(float("nan")) == "nan" and durations.exact(float("inf")) == "inf s"


def cli_timeliness(seconds: float | None) -> str:
    """The p50 row of the command line's quality report for a report whose timeliness is ``seconds``."""
    console = Console(record=True, width=200)
    quality = {"received": 1, "accepted": 1, "rejected": 0, "level": "good"}
    quality["timeliness"] = None if seconds is None else {"p50": seconds, "p95": seconds, "max": seconds}
    print_report({"id": "x", "record_type": "students", "status": "finished", "quality": quality}, console)
    line = next(line for line in console.export_text().splitlines() if "timeliness p50" in line)
    return re.split(r"\s*│\s*", line.strip(" │"))[-1]


def page_timeliness(seconds: float | None) -> dict:
    timeliness = None if seconds is None else {"p50": seconds, "p95": seconds, "max": seconds}
    return next(r for r in scorecard({"timeliness": timeliness}) if r["metric"] == "timeliness p50")


@pytest.mark.parametrize(("seconds", "shown"), CASES)
def test_the_command_line_and_the_pages_show_a_duration_alike(seconds, shown):
    assert cli_timeliness(seconds) == shown
    row = page_timeliness(seconds)
    assert (row["value"], row["title"]) == (shown, durations.exact(seconds))
    assert duration(seconds) == shown and exact_seconds(seconds) == durations.exact(seconds)
    assert age_text(seconds) == (shown if seconds >= 0 else "0.0s")  # an age is never negative


def test_a_missing_duration_is_a_dash():
    assert cli_timeliness(None) == "-"
    assert page_timeliness(None) == {"metric": "timeliness p50", "value": "—", "level": None, "title": None}
    assert duration(None) == "—" and exact_seconds(None) == "" and age_text(None) == "—"


def test_only_durations_carry_exact_seconds_on_the_scorecard():
    rows = scorecard({"received": 2, "validity": 0.5, "timeliness": {"p50": 90.0, "p95": 90.0, "max": 90.0}})
    assert {r["metric"] for r in rows if r["title"]} == {"timeliness p50", "timeliness p95", "timeliness max"}
