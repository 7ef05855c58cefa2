"""RabbitMQ as the broker, end to end: gunicorn, the Procfile's pipeline and lookups workers and
beat with ``CELERY_BROKER_URL=amqp://…/<vhost>`` (a vhost of this module's own on the local node),
Redis still the cache (``REDIS_URL``). Records land; the queues RabbitMQ holds are quorum queues;
a countdown (a child waiting for its parent, a geocoder asking to wait) comes back through
RabbitMQ's delayed delivery; ``/metrics`` and the Overview page count RabbitMQ's queues."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests

from tests.helpers.geocoder_server import Reply, answer_for, places, stored
from tests.helpers.payloads import session, student, tutor
from tests.helpers.procs import Stack, procfile_queues, running_stack, wait_until
from tests.helpers.rabbitmq import queue_messages, queue_types, rabbitmq_vhost
from tests.helpers.support import API_KEY, metric_samples, redis_db

pytestmark = pytest.mark.slow

QUEUES = ("etl", "lookups", "uploads", "jobs", "dead_letter")
ENV = {
    "ETL_PARENT_WAIT_SECONDS": "6",
    "ETL_RETRY_BACKOFF_SECONDS": "1",
    "ETL_RETRY_BACKOFF_MAX_SECONDS": "2",
    "ETL_SWEEP_INTERVAL_SECONDS": "5",
}


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    with rabbitmq_vhost("e2e") as url:
        yield url


@pytest.fixture(scope="module")
def stack(database_url, broker_url, server, tmp_path_factory) -> Iterator[Stack]:
    """web, the pipeline worker (etl, jobs, dead_letter; no geocoder: a tutor enriched there would
    land ``skipped``), the lookups worker (with the geocoder) and beat, all on the vhost."""
    env = {**ENV, "CELERY_BROKER_URL": broker_url}
    with running_stack(database_url, redis_db(15), tmp_path_factory.mktemp("logs"), **env) as s:
        s.worker(queues=f"{procfile_queues('worker')},dead_letter", concurrency=2)
        s.worker(name="lookups", queues=procfile_queues("lookups"), concurrency=1, ETL_GEOCODER_URL=server.url)
        s.beat()
        s.web()
        yield s


def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = requests.get(f"{stack.web_url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert r.status_code == 200, r.text[:2000]
    return metric_samples(r.text)


def test_a_batch_and_single_records_all_land(api, unique, sql):
    ids = [f"{unique}-{i:03d}" for i in range(120)]
    ingestion = api.submit("students/batch", [student(i) for i in ids])
    singles = [api.submit("students", student(f"{unique}-single-{i}")) for i in range(5)]
    status = api.wait_finished(ingestion["ingestion_id"], timeout=90)
    assert status["counts"]["persisted"] == 120 and status["counts"]["dead"] == 0, status
    for single in singles:
        assert api.wait_finished(single["ingestion_id"], timeout=60)["counts"]["persisted"] == 1
    rows = sql("SELECT count(*) FROM students WHERE student_id LIKE :p", p=f"{unique}-%")
    assert rows[0][0] == 125


def test_the_queues_on_rabbitmq_are_quorum_queues(stack, broker_url):
    types = queue_types(broker_url)
    assert {queue: types.get(queue) for queue in QUEUES} == dict.fromkeys(QUEUES, "quorum")
    # Celery's native delayed delivery: 28 levels of delay queues, declared by the workers
    delayed = {name: kind for name, kind in types.items() if name.startswith("celery_delayed_")}
    assert len(delayed) == 28 and set(delayed.values()) == {"quorum"}
    # every worker bound every queue to them (the pipeline worker started first, before any
    # lookups worker had declared its queue): none logs that delayed delivery is unavailable
    for proc in stack.procs:
        assert "delayed delivery" not in proc.log().lower(), proc.name


def test_a_child_retried_with_a_countdown_lands_once_its_parents_do(api, unique, sql):
    """The session waits for its tutor and student: each retry is a chain sent again with a
    countdown, which RabbitMQ holds in its delay queues and delivers back to ``etl``. Once its
    parents land (and wake it), the session lands."""
    t, st, s = f"{unique}-T", f"{unique}-ST", f"{unique}-S"
    waiting = api.submit("sessions", session(s, t, st))

    def retried() -> bool:
        rows = sql("SELECT waiting_on, attempts FROM raw_records WHERE natural_key = :s", s=s)
        return bool(rows) and rows[0].waiting_on is not None

    wait_until(retried, 30, what="the session to wait for its parents")
    api.wait_finished(api.submit("tutors", tutor(t))["ingestion_id"], timeout=60)
    api.wait_finished(api.submit("students", student(st))["ingestion_id"], timeout=60)
    status = api.wait_finished(waiting["ingestion_id"], timeout=60)
    assert status["counts"]["persisted"] == 1
    assert sql("SELECT count(*) FROM sessions WHERE session_id = :s", s=s)[0][0] == 1


def test_a_child_whose_parent_never_comes_is_retried_by_countdown_until_it_is_a_dead_letter(api, unique, sql):
    """Nothing wakes this session: only the delayed retries bring it back, again and again, until
    ETL_PARENT_WAIT_SECONDS have passed and it is dead-lettered ``missing_parent``."""
    s = f"{unique}-S"
    ingestion = api.submit("sessions", session(s, f"{unique}-no-tutor", f"{unique}-no-student"))
    status = api.wait_settled(ingestion["ingestion_id"], timeout=90)
    assert status["counts"]["dead"] == 1, status
    rows = sql("SELECT error_type FROM dead_letters WHERE natural_key = :s", s=s)
    assert [r.error_type for r in rows] == ["missing_parent"]


def test_a_geocoder_retry_with_a_countdown_comes_back_to_the_lookups_worker(api, server, unique, sql):
    """The geocoder answers 429 ``Retry-After: 1`` once per name: the enrich task is retried with a
    1 s countdown through RabbitMQ's delay queues. The retry comes back on ``lookups`` (the
    pipeline worker has no geocoder and would store the tutors ``skipped``): they land found."""
    berlin, lima, _ = places(unique)
    answer = answer_for(unique)
    seen: dict[str, int] = {}

    def reply(name: str) -> Reply:
        seen[name] = seen.get(name, 0) + 1
        if seen[name] == 1:
            return "json", (429, {"error": "slow down"}, {"Retry-After": "1"})
        return answer(name)

    server.reply = reply
    ids = [f"{unique}-tutor-{i}" for i in range(4)]
    ingestion = api.submit("tutors/batch", [tutor(t, location=(berlin, lima)[i % 2]) for i, t in enumerate(ids)])
    status = api.wait_finished(ingestion["ingestion_id"], timeout=90)
    assert status["counts"]["persisted"] == 4, status
    rows = stored(sql, ids)
    assert {row[5] for row in rows.values()} == {"found"}
    assert {row[1] for row in rows.values()} == {"DE", "PE"}
    assert (server.requests[berlin.casefold()], server.requests[lima.casefold()]) == (2, 2)


def test_metrics_and_the_overview_count_the_rabbitmq_queues(stack, api, broker_url):
    def drained():
        samples = scrape(stack)
        return samples if all(samples.get(("etl_queue_messages", (("queue", q),))) == 0 for q in QUEUES) else None

    samples = wait_until(drained, 60, what="every queue to be empty in /metrics")
    assert samples[("etl_broker_up", ())] == 1 and samples[("etl_redis_up", ())] == 1
    assert ("etl_queue_messages", (("queue", "unacked"),)) not in samples  # AMQP does not tell it
    # rabbitmqctl agrees (its counts are statistics, emitted every few seconds)
    wait_until(lambda: {q: queue_messages(broker_url)[q] for q in QUEUES} == dict.fromkeys(QUEUES, (0, 0)), 30)

    page = signed_in(stack).get(f"{stack.web_url}/ui/overview", timeout=30)
    assert page.status_code == 200
    assert "Messages ready in RabbitMQ" in page.text and "The broker did not answer" not in page.text
    data = signed_in(stack).get(f"{stack.web_url}/ui/api/overview", timeout=30).json()
    assert data["queue_error"] is None and data["broker"] == "rabbitmq"
    assert {q["queue"]: q["messages"] for q in data["queues"]} == dict.fromkeys(QUEUES, 0)


def signed_in(stack: Stack) -> requests.Session:
    """A session signed in to the operator's pages with the test key (as a browser would)."""
    http = requests.Session()
    form = http.get(f"{stack.web_url}/ui/signin", timeout=30).text
    token = re.search(r'name="csrf-token" content="([^"]+)"', form).group(1)
    r = http.post(f"{stack.web_url}/ui/signin", data={"key": API_KEY, "csrf_token": token}, timeout=30)
    assert r.status_code == 200, r.status_code
    return http
