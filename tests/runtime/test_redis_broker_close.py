"""A Redis broker that goes away while a worker holds messages: closing the connection ends
cleanly, and nothing later trips over the detached transport (etl_app/runtime/redis_broker_close.py).

The order is the one a Celery worker has: its task consumer's channel (holding delivered,
unacknowledged messages) was opened before its remote-control channel (an auto-delete fanout
queue); kombu closes a connection's channels last-opened first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kombu import Connection, Consumer, Exchange, Queue

from etl_app.runtime import redis_broker_close

from tests.helpers.services import PrivateRedis

WORK = Queue("work", Exchange("work"), "work")
BROADCAST = Queue("broadcast", Exchange("broadcast", type="fanout"), auto_delete=True)


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
    with Connection(broker.url(0)) as producer_conn:
        producer = producer_conn.Producer()
        for i in range(3):
            producer.publish({"i": i}, exchange=WORK.exchange, routing_key="work", declare=[WORK], serializer="json")

    conn = Connection(broker.url(0), transport_options={"socket_connect_timeout": 1})
    conn.connect()
    task_channel = conn.channel()
    received = []
    task_consumer = Consumer(task_channel, [WORK], callbacks=[lambda body, msg: received.append(msg)], accept=["json"])
    task_consumer.qos(prefetch_count=3)
    task_consumer.consume()
    control = conn.channel()
    Consumer(control, [BROADCAST], callbacks=[lambda body, msg: None], accept=["json"]).consume()
    assert control.client is not None  # the fanout binding is deleted through this client on close
    for _ in range(20):
        if received:
            break
        try:
            conn.drain_events(timeout=0.2)
        except TimeoutError:
            pass
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
