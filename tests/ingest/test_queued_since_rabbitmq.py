"""What the outbox sweeper measures its claim against on RabbitMQ: the queue's head as the workers
record it (etl_app.pipeline.queue_head), on a vhost of the test's own on the local node, with no
worker running (the test takes a message the way a worker's consumer does).

A long queue: messages sent 100 s and 90 s ago, a lease of 20 s. Once a worker has taken the
first one, the sweeper leaves alone the records of the message still queued and re-sends the
record whose message was lost; when the queue's messages are lost too (purged), it re-sends
theirs as well. The claims are rolled back: other tests' records are left as they are."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from kombu import Connection, Queue

from etl_app.jobs import sweeper
from etl_app.names import PIPELINE_QUEUE
from etl_app.pipeline import messages
from etl_app.pipeline.messages import publish_chunks
from etl_app.pipeline.queue_head import read_head
from etl_app.runtime.celery_app import _record_queue_head

from tests.helpers.dead_letters import store
from tests.helpers.payloads import student
from tests.helpers.rabbitmq import rabbitmq_vhost, rabbitmqctl, vhost_of
from tests.ingest.test_lease import LEASE, claimed_of, set_leases


@pytest.fixture
def broker_url() -> Iterator[str]:
    with rabbitmq_vhost("sweeper") as url:
        yield url


def send_as_if(monkeypatch, seconds_ago: float) -> None:
    """Messages published from now on carry a send time this many seconds back."""
    real = time.time
    monkeypatch.setattr(messages, "time", SimpleNamespace(time=lambda: real() - seconds_ago))


def take_one(celery, broker_url: str) -> dict:
    """A worker's consumer takes the first message of ``etl`` (and runs it: acknowledged); the
    consumer's ``task_received`` handler sees it. Returns its headers."""
    with Connection(broker_url) as conn:
        message = Queue(PIPELINE_QUEUE, channel=conn.default_channel).get(no_ack=False)
        assert message is not None, "the queue is empty"
        _record_queue_head(
            sender=SimpleNamespace(app=celery),
            request=SimpleNamespace(delivery_info=message.delivery_info, request_dict=message.headers),
        )
        message.ack()
    return message.headers


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def test_on_rabbitmq_the_sweeper_leaves_queued_records_alone_and_re_sends_lost_ones(
    make_app, engine, unique, monkeypatch, broker_url
):
    app = make_app(broker_url=broker_url, outbox_lease_seconds=LEASE)
    runtime = app.extensions["etl"]
    celery, tools, prefix = runtime.celery, runtime.job_tools, runtime.settings.broker_key_prefix
    ids = store(engine, "students", [student(f"{unique}-{i}") for i in range(4)]).ids
    taken, queued, lost = ids[0], ids[1:3], ids[3]
    try:
        assert sweeper.queued_since(tools, prefix) is None  # nothing queued

        send_as_if(monkeypatch, 100)
        publish_chunks(celery, "students", [taken], 500)
        send_as_if(monkeypatch, 90)
        publish_chunks(celery, "students", queued, 1)  # two messages
        monkeypatch.undo()
        with engine.begin() as conn:  # the taken record's chain ran; the lost one's message never came
            conn.execute(sa.text("UPDATE raw_records SET status = 'persisted' WHERE id = :i"), {"i": taken})
        set_leases(engine, {queued[0]: 90, queued[1]: 90, lost: 200})

        # three messages queued, none taken yet: the queue's age is unknown, and the sweeper goes by
        # the lease alone (what it did before the head was measured): it would re-send them all
        assert sweeper.queued_since(tools, prefix) is None
        assert claimed_of(engine, ids) == {*queued, lost}

        sent = float(take_one(celery, broker_url)["etl_sent_at"])
        assert sent == pytest.approx(time.time() - 100, abs=30)
        runtime.queue_heads.flush()  # the worker's thread writes within a second; here at once
        assert read_head(runtime.cache, prefix, PIPELINE_QUEUE) == sent

        # the two messages still queued were sent after the one taken: their records are not due,
        # the lost record (leased long before that message was sent) is
        since = sweeper.queued_since(tools, prefix)
        assert since == datetime.fromtimestamp(sent, UTC)
        assert claimed_of(engine, ids, queued_since=since) == {lost}

        # the queued messages are lost too: an empty queue, and the lease alone decides again
        rabbitmqctl("purge_queue", "-p", vhost_of(broker_url), PIPELINE_QUEUE)
        assert sweeper.queued_since(tools, prefix) is None
        assert claimed_of(engine, ids, queued_since=sweeper.queued_since(tools, prefix)) == {*queued, lost}
    finally:
        runtime.queue_heads.close()


def test_a_head_older_than_the_queue_never_hides_a_record_leased_before_it(make_app, engine, unique, broker_url):
    """The head only says that what is queued was sent after it: a record leased more than a
    lease before it is due, however stale the head (no worker took anything since)."""
    app = make_app(broker_url=broker_url, outbox_lease_seconds=LEASE)
    runtime = app.extensions["etl"]
    tools, prefix = runtime.job_tools, runtime.settings.broker_key_prefix
    ids = store(engine, "students", [student(f"{unique}-{i}") for i in range(2)]).ids
    publish_chunks(runtime.celery, "students", ids, 500)
    runtime.queue_heads.observe(PIPELINE_QUEUE, time.time() - 60)
    runtime.queue_heads.close()
    set_leases(engine, {ids[0]: 100, ids[1]: 30})
    since = sweeper.queued_since(tools, prefix)
    assert since is not None and since <= ago(50)
    assert claimed_of(engine, ids, queued_since=since) == {ids[0]}
