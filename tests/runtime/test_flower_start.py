"""Flower's start is quiet: flowerconfig.py (run by Flower as it starts) drops the "Inspect method
… failed" lines of the workers that had not answered yet, and keeps a failure with a cause."""

from __future__ import annotations

import logging
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.unit
def test_flower_does_not_report_the_workers_that_have_not_answered_yet_at_its_start(caplog):
    runpy.run_path(str(ROOT / "flowerconfig.py"))  # as Flower runs its --conf file
    inspector = logging.getLogger("flower.inspector")  # the logger of Flower's Inspector
    with caplog.at_level(logging.WARNING, logger="flower.inspector"):
        for method in ("stats", "active_queues", "registered", "conf"):
            inspector.warning("Inspect method %s failed", method)  # what Flower logs when no worker answered
        inspector.warning("Inspect method %s failed: %s", "stats", "Error 111 connecting to 127.0.0.1:6379")
    assert [r.getMessage() for r in caplog.records] == [
        "Inspect method stats failed: Error 111 connecting to 127.0.0.1:6379"
    ]
