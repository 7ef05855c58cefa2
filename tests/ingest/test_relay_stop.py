"""The outbox relay's thread ends with its app: once ``Relay.stop()`` returns, it claims nothing
more. (A relay stopped while it waited out its window used to run one more round afterwards and,
the database being shared, could claim and send the next app's records to its own broker.)"""

from __future__ import annotations

import time

import pytest

from etl_app.ingest import relay as relay_module
from etl_app.ingest.relay import Relay

pytestmark = pytest.mark.unit


def test_a_relay_stopped_during_its_window_claims_nothing_after_stop_returns(monkeypatch):
    rounds: list[float] = []
    monkeypatch.setattr(relay_module, "relay_once", lambda publisher: rounds.append(time.monotonic()) or 0)
    relay = Relay(publisher=lambda: None, window=0.3, idle=60.0)  # type: ignore[arg-type]
    relay.quiet = 0.3  # a round does not close before its window for want of records
    relay.notify()  # the thread starts and waits out its window before a round
    time.sleep(0.05)
    relay.stop()
    stopped = time.monotonic()
    time.sleep(0.5)  # past the window
    assert [t for t in rounds if t > stopped] == []
    assert relay._thread is not None and not relay._thread.is_alive()


def test_a_running_relay_still_relays_until_it_is_stopped(monkeypatch):
    rounds: list[float] = []
    monkeypatch.setattr(relay_module, "relay_once", lambda publisher: rounds.append(time.monotonic()) or 0)
    relay = Relay(publisher=lambda: None, window=0.01, idle=0.05)  # type: ignore[arg-type]
    relay.notify()
    deadline = time.monotonic() + 5
    while len(rounds) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    relay.stop()
    assert len(rounds) >= 3
    count = len(rounds)
    time.sleep(0.2)
    assert len(rounds) == count
