"""The head of a queue, in time (etl_app.pipeline.queue_head): which deliveries count, the
in-process max a worker keeps between writes, and the max-update in Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from etl_app.pipeline import queue_head
from etl_app.pipeline.queue_head import SENT_AT_HEADER, HeadRecorder, delivered_from, raise_heads, read_head

PIPELINE = ("etl", "lookups")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("routing_key", "headers", "expected"),
    [
        ("etl", {SENT_AT_HEADER: 12.5}, ("etl", 12.5)),
        ("lookups", {SENT_AT_HEADER: "13.25"}, ("lookups", 13.25)),
        # back from RabbitMQ's delay queues: "<delay bits>.<routing key>"
        ("0.0.0.1.0.1.etl", {SENT_AT_HEADER: 7.0}, ("etl", 7.0)),
        ("jobs", {SENT_AT_HEADER: 12.5}, None),  # not a pipeline queue
        ("dead_letter", {SENT_AT_HEADER: 12.5}, None),
        ("etl", {}, None),  # a producer that does not stamp its messages
        ("etl", {SENT_AT_HEADER: "soon"}, None),
        ("", {SENT_AT_HEADER: 12.5}, None),
    ],
)
def test_a_delivery_counts_for_its_queue_when_it_carries_its_send_time(routing_key, headers, expected):
    assert delivered_from({"routing_key": routing_key}, headers, PIPELINE) == expected


@pytest.mark.unit
def test_a_message_delivered_again_counts_for_nothing_whatever_its_send_time():
    # RabbitMQ gives returned messages back out of their queue's order: a young one would raise
    # the head past older messages still waiting
    assert delivered_from({"routing_key": "etl", "redelivered": True}, {SENT_AT_HEADER: 99.0}, PIPELINE) is None
    assert delivered_from({"routing_key": "etl", "redelivered": False}, {SENT_AT_HEADER: 99.0}, PIPELINE) == (
        "etl",
        99.0,
    )


@pytest.mark.unit
def test_a_delivery_without_delivery_info_or_headers_counts_for_nothing():
    assert delivered_from(None, {SENT_AT_HEADER: 1.0}, PIPELINE) is None
    assert delivered_from({"routing_key": "etl"}, None, PIPELINE) is None


class Written:
    """Stands in for :func:`raise_heads`: records each write, or fails while ``failing``."""

    def __init__(self) -> None:
        self.writes: list[dict[str, float]] = []
        self.failing = False

    def __call__(self, _client, _prefix, heads):
        if self.failing:
            raise redis.ConnectionError("Redis is down")
        self.writes.append(dict(heads))
        return len(heads)


@pytest.fixture
def written(monkeypatch) -> Written:
    fake = Written()
    monkeypatch.setattr(queue_head, "raise_heads", fake)
    return fake


@pytest.fixture
def recorder(written) -> Iterator[HeadRecorder]:
    """A recorder whose thread never writes during the test (an hour between writes)."""
    made = HeadRecorder(lambda: None, "p:", interval=3600)
    yield made
    made.close()


@pytest.mark.unit
def test_a_worker_keeps_the_latest_send_time_per_queue_and_writes_once_for_many_deliveries(recorder, written):
    for sent_at in (10.0, 30.0, 20.0):  # a message back from a countdown comes with an old time
        recorder.observe("etl", sent_at)
    recorder.observe("lookups", 5.0)
    assert recorder.flush()
    assert written.writes == [{"etl": 30.0, "lookups": 5.0}]
    assert recorder.flush()  # nothing new: no write
    assert written.writes == [{"etl": 30.0, "lookups": 5.0}]


@pytest.mark.unit
def test_a_failed_write_keeps_the_heads_for_the_next_one(recorder, written):
    recorder.observe("etl", 30.0)
    written.failing = True
    assert not recorder.flush()
    recorder.observe("etl", 20.0)  # older than what waits to be written: changes nothing
    recorder.observe("lookups", 8.0)
    written.failing = False
    assert recorder.flush()
    assert written.writes == [{"etl": 30.0, "lookups": 8.0}]


@pytest.mark.unit
def test_closing_writes_what_is_pending(written):
    recorder = HeadRecorder(lambda: None, "p:", interval=3600)
    recorder.observe("etl", 42.0)
    recorder.close()
    assert written.writes == [{"etl": 42.0}]


def test_a_head_in_redis_only_ever_grows_whoever_writes_last(api_redis_url, broker_prefix):
    client = redis.Redis.from_url(api_redis_url)
    assert read_head(client, broker_prefix, "etl") is None
    assert raise_heads(client, broker_prefix, {"etl": 100.5, "lookups": 50.0}) == 2
    # a slower worker's write arrives later, with an older head: ignored
    assert raise_heads(client, broker_prefix, {"etl": 90.0, "lookups": 60.25}) == 1
    assert read_head(client, broker_prefix, "etl") == 100.5
    assert read_head(client, broker_prefix, "lookups") == 60.25
    assert client.exists(f"{broker_prefix}etl:queue_head:etl")  # under the deployment's prefix
