"""The outbox relay during a broker outage: requests that wake it do not make it try again before
its backoff is over (each failed try used to double the backoff, so a busy API pushed it to its
cap within seconds and the relay came back long after the broker did); once the broker takes
the records again, it logs what it sent."""

from __future__ import annotations

import logging
import time

import pytest

from etl_app.errors import BrokerUnavailable
from etl_app.ingest import relay as relay_module
from etl_app.ingest.relay import Relay

pytestmark = pytest.mark.unit


def test_wake_ups_during_an_outage_do_not_add_tries_and_the_relay_sends_once_the_broker_is_back(monkeypatch, caplog):
    tries: list[float] = []
    broker_up = False

    def relay_once(publisher):
        tries.append(time.monotonic())
        if not broker_up:
            raise BrokerUnavailable("the broker did not take 10 relayed records")
        return 10

    monkeypatch.setattr(relay_module, "relay_once", relay_once)
    relay = Relay(publisher=lambda: None, window=0.0, idle=0.1)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="etl_app.ingest.relay")
    try:
        relay.notify()
        for _ in range(40):  # 40 requests in about 0.6 s, each waking the relay
            time.sleep(0.015)
            relay.notify()
        during_outage = len(tries)
        # first try at once, then backoffs of 0.2 and 0.4 s: at most 3 tries, whatever the wakes
        assert 1 <= during_outage <= 3, during_outage
        broker_up = True
        deadline = time.monotonic() + 10
        while not any("broker back, sent 10 records" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.05)
    finally:
        relay.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert all("retrying in" in w for w in warnings), warnings
    assert len(warnings) == during_outage
