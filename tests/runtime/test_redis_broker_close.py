"""A Redis broker that goes away while a worker holds messages: closing the connection ends
cleanly, and nothing later trips over the detached transport; an acknowledgement the broker
never got does not keep the worker from consuming once it is back
(etl_app/runtime/redis_broker_close.py).

The order is the one a Celery worker has: its task consumer's channel (holding delivered,
unacknowledged messages) was opened before its remote-control channel (an auto-delete fanout
queue); kombu closes a connection's channels last-opened first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Queue

from etl_app.runtime import redis_broker_close

from tests.helpers.services import PrivateRedis

WORK = Queue("work", Exchange("work"), "work")
BROADCAST = Queue("broadcast", Exchange("broadcast", type="fanout"), auto_delete=True)


def _publish(broker: PrivateRedis, n: int) -> None:
    with Connection(broker.url(0)) as producer_conn:
        producer = producer_conn.Producer()
        for i in range(n):
            producer.publish({"i": i}, exchange=WORK.exchange, routing_key="work", declare=[WORK], serializer="json")


def _consume(broker: PrivateRedis, prefetch: int, **options: float) -> tuple[Connection, Any, list]:
    """A connection consuming WORK on a channel of its own with this prefetch; the messages it
    takes land in the list."""
    conn = Connection(broker.url(0), transport_options={"socket_connect_timeout": 1, **options})
    conn.connect()
    channel = conn.channel()
    received: list = []
    consumer = Consumer(channel, [WORK], callbacks=[lambda body, msg: received.append(msg)], accept=["json"])
    consumer.qos(prefetch_count=prefetch)
    consumer.consume()
    return conn, channel, received


def _drain_until(conn: Connection, received: list, n: int) -> None:
    """Let the consumers of ``conn`` take messages until ``received`` holds ``n`` (4 s at most)."""
    for _ in range(20):
        if len(received) >= n:
            return
        try:
            conn.drain_events(timeout=0.2)
        except TimeoutError:
            pass


@pytest.fixture
def broker() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


def test_a_connection_lost_with_unacked_messages_closes_every_channel(broker):
    redis_broker_close.install()
    _publish(broker, 3)
    conn, task_channel, received = _consume(broker, prefetch=3)
    control = conn.channel()
    Consumer(control, [BROADCAST], callbacks=[lambda body, msg: None], accept=["json"]).consume()
    assert control.client is not None  # the fanout binding is deleted through this client on close
    _drain_until(conn, received, 1)
    assert received and task_channel.qos._delivered, "the task channel holds an unacknowledged message"

    broker.shutdown()  # SIGTERM, as a service manager's stop does
    conn.collect()  # what Celery's consumer does with a connection it lost

    # Every channel was closed, the one holding messages included ...
    assert control.closed and task_channel.closed
    # ... so a second close (the consumer's cleanup after it reconnects) does nothing, where it
    # used to restore messages through the detached transport: AttributeError 'hostname'.
    broker.start()
    task_channel.close()
    conn.release()
    # The broker was killed without persistence: the messages are gone from it (the outbox
    # sweeper re-drives their records); with persistence they would come back after the
    # visibility timeout. Either way the worker lives on and can connect again.
    with Connection(broker.url(0)) as again:
        again.connect()
        assert again.connected


def test_a_worker_whose_acknowledgement_failed_consumes_again_once_the_broker_is_back(broker):
    """Prefetch 1, as a worker whose every place holds a message: the acknowledgement of the one
    it holds fails while the broker does not answer (paused, as behind a cut link). Once the
    broker answers again the consumer takes the next message. (Whether the first stays in the
    broker's unacknowledged set, for the visibility timeout to give it out again, depends on
    whether the acknowledgement reached the broker's socket before the client gave up: a paused
    broker still runs it when it resumes.)"""
    redis_broker_close.install()
    _publish(broker, 2)
    conn, channel, received = _consume(broker, prefetch=1, socket_timeout=1)

    _drain_until(conn, received, 1)
    assert [m.payload for m in received] == [{"i": 0}]
    assert not channel.qos.can_consume(), "the one place is taken"

    broker.pause()
    try:
        with pytest.raises(channel.connection_errors):
            received[0].ack()
    finally:
        broker.resume()
    assert channel.qos.can_consume(), "the failed acknowledgement released the place"

    _drain_until(conn, received, 2)
    assert [m.payload for m in received] == [{"i": 0}, {"i": 1}]
    received[1].ack()
    assert channel.qos.can_consume()
    conn.release()
