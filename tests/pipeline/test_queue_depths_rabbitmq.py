"""Queue depths on RabbitMQ: ``/metrics`` and the Overview page count each queue as RabbitMQ does
(messages ready), on a vhost of the test's own where no worker consumes; a queue not declared yet
counts 0; a broker that does not answer leaves the depths unknown, never fails the scrape or the
page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from etl_app import names

from tests.helpers.procs import wait_until
from tests.helpers.rabbitmq import queue_messages, queue_types, rabbitmq_vhost
from tests.helpers.support import API_KEY, metric_samples
from tests.helpers.ui import sign_in

QUEUES = ("etl", "lookups", "uploads", "jobs", "dead_letter")


@pytest.fixture
def broker_url() -> Iterator[str]:
    with rabbitmq_vhost("depths") as url:
        yield url


def scrape(client, auth) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics", headers=auth)
    assert r.status_code == 200, r.get_data(as_text=True)
    return metric_samples(r.get_data(as_text=True))


def depths(samples) -> dict[str, float | None]:
    return {q: samples.get(("etl_queue_messages", (("queue", q),))) for q in (*QUEUES, "unacked")}


def overview(app) -> dict:
    client = app.test_client()
    assert sign_in(client, API_KEY).status_code in (200, 302)
    return client.get("/ui/api/overview").get_json()


def test_metrics_and_the_overview_count_what_waits_in_each_rabbitmq_queue(make_app, auth, broker_url):
    app = make_app(broker_url=broker_url)
    celery = app.extensions["etl"].celery
    for _ in range(3):
        celery.send_task(names.SWEEP_OUTBOX, queue=names.JOBS_QUEUE)
    for _ in range(2):
        celery.send_task(names.VALIDATE, args=[{}], queue=names.PIPELINE_QUEUE)
    # what the publisher declared is a quorum queue; nothing has declared lookups, uploads or dead_letter yet
    assert queue_types(broker_url) == {"jobs": "quorum", "etl": "quorum"}
    # rabbitmqctl's counts are statistics, emitted every few seconds
    wait_until(lambda: {q: n[0] for q, n in queue_messages(broker_url).items()} == {"jobs": 3, "etl": 2}, 30)

    samples = scrape(app.test_client(), auth)
    assert depths(samples) == {"etl": 2, "lookups": 0, "uploads": 0, "jobs": 3, "dead_letter": 0, "unacked": None}
    assert samples[("etl_broker_up", ())] == 1 and samples[("etl_redis_up", ())] == 1

    data = overview(app)
    assert data["queue_error"] is None and data["broker"] == "rabbitmq"
    assert {q["queue"]: q["messages"] for q in data["queues"]} == {
        "etl": 2, "lookups": 0, "uploads": 0, "jobs": 3, "dead_letter": 0
    }  # fmt: skip


@pytest.mark.parametrize(
    "url",
    ["amqp://guest:guest@127.0.0.1:1//", "amqp://guest:guest@127.0.0.1:5672/etl-no-such-vhost"],
    ids=["nothing-listening", "no-such-vhost"],
)
def test_a_rabbitmq_that_does_not_answer_leaves_the_depths_unknown(make_app, auth, url):
    app = make_app(broker_url=url)
    samples = scrape(app.test_client(), auth)
    assert depths(samples) == dict.fromkeys((*QUEUES, "unacked"))  # absent: unknown, not 0
    assert samples[("etl_broker_up", ())] == 0
    assert samples[("etl_redis_up", ())] == 1  # the cache Redis answered: its metrics are there

    data = overview(app)
    assert data["queue_error"].startswith("The broker did not answer")
    assert {q["queue"]: q["messages"] for q in data["queues"]} == dict.fromkeys(QUEUES)
    client = app.test_client()
    sign_in(client, API_KEY)
    page = client.get("/ui/overview").get_data(as_text=True)
    assert "The broker did not answer" in page and page.count(">unknown</td>") == len(QUEUES)
