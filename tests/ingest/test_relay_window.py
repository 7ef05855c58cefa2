"""The outbox relay's round closes when the records stop: the last records of a flood, and a
record that comes alone, go out without waiting out the window; records that trickle in still
share a window's round."""

from __future__ import annotations

import time

import pytest

from etl_app.ingest import relay as relay_module
from etl_app.ingest.relay import QUIET_GAPS, QUIET_SECONDS, Relay

pytestmark = pytest.mark.unit

LONG = 30.0  # a window no round of these tests waits out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_the_quiet_that_closes_a_round_follows_the_gaps_between_records(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(relay_module, "time", clock)
    relay = Relay(publisher=lambda: None, window=0.1, max_window=1.0)  # type: ignore[arg-type]
    relay.stop()  # no thread: only what notify() records
    relay.notify()
    assert relay._quiet() == QUIET_SECONDS  # a record alone: it goes out after the short quiet
    for _ in range(20):  # a flood: a record a ms
        clock.now += 0.001
        relay.notify()
    assert relay._quiet() == QUIET_SECONDS
    for _ in range(20):  # a trickle: a record every 200 ms keeps rounds open for several gaps
        clock.now += 0.2
        relay.notify()
    assert relay._quiet() == pytest.approx(QUIET_GAPS * 0.2, rel=0.01)
    clock.now += 5.0  # after a pause longer than the longest window, a record comes alone again
    relay.notify()
    assert relay._quiet() == QUIET_SECONDS


def _relay_counting_rounds(monkeypatch) -> tuple[Relay, list[float]]:
    rounds: list[float] = []
    monkeypatch.setattr(relay_module, "relay_once", lambda publisher: rounds.append(time.monotonic()) or 1)
    return Relay(publisher=lambda: None, window=LONG, max_window=LONG, idle=LONG), rounds  # type: ignore[arg-type]


def _wait_for(rounds: list[float], n: int) -> None:
    deadline = time.monotonic() + LONG / 3
    while len(rounds) < n:
        assert time.monotonic() < deadline, "the relay waited out its window"
        time.sleep(0.01)


def test_the_last_records_of_a_flood_go_out_without_waiting_out_the_window(monkeypatch):
    relay, rounds = _relay_counting_rounds(monkeypatch)
    try:
        for _ in range(50):
            relay.notify()
            time.sleep(0.002)
        last = time.monotonic()
        _wait_for(rounds, 1)
        assert len(rounds) == 1 and rounds[0] > last  # one round, after the last record
    finally:
        relay.stop()


def test_a_record_alone_goes_out_without_waiting_out_the_window(monkeypatch):
    relay, rounds = _relay_counting_rounds(monkeypatch)
    try:
        relay.notify()
        _wait_for(rounds, 1)
    finally:
        relay.stop()
