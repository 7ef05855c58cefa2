"""/metrics adds up across processes: records go through a real worker with two prefork children
and a web of two gunicorn workers, and ONE scrape (answered by whichever gunicorn worker) must
report exactly what the database holds and what every process measured."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.helpers.payloads import student
from tests.helpers.procs import Stack, running_stack, wait_until
from tests.helpers.support import API_KEY, RUN_ID, Api, fresh_database, metric_samples, redis_db

pytestmark = pytest.mark.slow

CHUNK_SIZE = 10
BATCHES = 3
PER_BATCH = 40  # ≥ CHUNK_SIZE: published at once as PER_BATCH / CHUNK_SIZE chunks (not relayed)
N = BATCHES * PER_BATCH
CHUNKS = BATCHES * PER_BATCH // CHUNK_SIZE
REQUESTS = 20


@pytest.fixture(scope="module")
def metrics_database() -> Iterator[str]:
    """A database of this module's own: the counters are totals over the whole database."""
    with fresh_database(f"{RUN_ID}_metrics") as url:
        yield url


@pytest.fixture(scope="module")
def stack(metrics_database, tmp_path_factory) -> Iterator[Stack]:
    env = {"ETL_CHUNK_SIZE": str(CHUNK_SIZE), "ETL_METRICS_KEY": "scraper-key"}
    with running_stack(metrics_database, redis_db(15), tmp_path_factory.mktemp("logs"), **env) as s:
        s.worker(concurrency=2)
        s.web(workers=2)
        yield s


def scrape(stack: Stack, key: str = "scraper-key") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = requests.get(f"{stack.web_url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text[:2000]
    return metric_samples(r.text)


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_one_scrape_reports_what_every_process_did(stack):
    api = Api(stack.web_url)
    assert requests.get(f"{stack.web_url}/metrics", timeout=10).status_code == 401
    run = uuid.uuid4().hex[:8]
    ingestions = []
    for b in range(BATCHES):
        batch = [student(f"m{run}-{b}-{i}") for i in range(PER_BATCH)] + [{"student_id": "bad id"}]
        body = api.submit("students/batch", batch)
        assert (body["accepted"], body["rejected"]) == (PER_BATCH, 1)
        ingestions.append(body["ingestion_id"])
    # Requests on fresh connections, which the two gunicorn workers share between them.
    for _ in range(REQUESTS):
        r = requests.get(
            f"{stack.web_url}/api/v1/record-types",
            headers={"Authorization": f"Bearer {API_KEY}", "Connection": "close"},
            timeout=30,
        )
        assert r.status_code == 200
    for ingestion_id in ingestions:
        counts = api.wait_finished(ingestion_id, timeout=120)["counts"]
        assert counts["persisted"] == PER_BATCH, counts

    def drained():
        samples = scrape(stack)
        queues = ("etl", "lookups", "uploads", "jobs", "dead_letter", "unacked")
        return [value(samples, "etl_queue_messages", queue=q) for q in queues] == [0] * len(queues)

    # The last chain's ack comes after its task_postrun (the child observes, then the parent
    # acks), so once nothing is unacknowledged every observation is in Redis.
    wait_until(drained, 60, what="the queues to drain")

    def requests_summed():
        # each gunicorn worker sends its request counts to Redis once a second: wait for both
        samples = scrape(stack)
        return (
            value(samples, "etl_api_requests_total", endpoint="read.list_record_types", status="200") == REQUESTS
            and value(samples, "etl_api_requests_total", endpoint="ingest.post_batch", status="202") == BATCHES
        )

    wait_until(requests_summed, 30, 0.2, what="both web workers' request counts summed in Redis")
    samples = scrape(stack)  # ONE scrape: every assertion below reads it
    assert value(samples, "etl_database_up") == 1 and value(samples, "etl_redis_up") == 1
    assert value(samples, "etl_records_accepted_total", record_type="students") == N
    assert value(samples, "etl_records_rejected_total", record_type="students") == BATCHES
    assert value(samples, "etl_records_received_total", record_type="students") == N + BATCHES
    assert value(samples, "etl_records_persisted_total", record_type="students") == N
    assert value(samples, "etl_records_dead", record_type="students") == 0
    assert value(samples, "etl_outbox_unsettled_records", record_type="students") == 0
    for queue in ("etl", "lookups", "uploads", "jobs", "dead_letter", "unacked"):
        assert value(samples, "etl_queue_messages", queue=queue) == 0, queue

    # Stage durations: observed by both prefork children, one histogram in Redis.
    for task in ("etl.validate", "etl.enrich", "etl.persist"):
        count = value(samples, "etl_task_duration_seconds_count", task=task)
        assert count is not None and count >= CHUNKS, (task, count)
        assert value(samples, "etl_task_duration_seconds_bucket", task=task, le="+Inf") == count
        assert value(samples, "etl_task_duration_seconds_sum", task=task) > 0
        runs = sum(
            v for (name, labels), v in samples.items() if name == "etl_task_runs_total" and ("task", task) in labels
        )
        assert runs == count, (task, runs, count)
    # Every persist of this run stored one whole chunk: as many observations as chunks persisted.
    assert value(samples, "etl_task_duration_seconds_count", task="etl.persist") == CHUNKS
    assert value(samples, "etl_task_runs_total", task="etl.persist", state="SUCCESS") == CHUNKS

    # API requests from both gunicorn workers, summed in Redis (a per-process counter would show
    # only the requests of the worker that answered the scrape).
    assert value(samples, "etl_api_requests_total", endpoint="read.list_record_types", status="200") == REQUESTS
    assert value(samples, "etl_api_requests_total", endpoint="ingest.post_batch", status="202") == BATCHES
    assert value(samples, "etl_api_request_seconds_count", endpoint="ingest.post_batch") == BATCHES

    # The API key reads the same numbers.
    again = scrape(stack, API_KEY)
    assert value(again, "etl_records_persisted_total", record_type="students") == N
