"""GET /metrics: the key, queue depths under the broker prefix, and the numbers read at scrape
time from PostgreSQL and Redis (so that every process reports the same)."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest
import redis
import sqlalchemy as sa

from etl_app import errors
from etl_app.local.supervisor import restarts_path, write_restarts
from etl_app.runtime import stage_metrics

from tests.helpers.payloads import student
from tests.helpers.support import metric_samples

METRICS_KEY = "scrape-" + uuid.uuid4().hex[:8]


def scrape(client, auth) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    r = client.get("/metrics", headers=auth)
    assert r.status_code == 200, r.get_data(as_text=True)
    return metric_samples(r.get_data(as_text=True))


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def metrics_app(make_app):
    return make_app(metrics_keys=(METRICS_KEY,))


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {METRICS_KEY}"}, {"Authorization": "Bearer "}],
)
def test_metrics_without_a_valid_key_is_401(metrics_app, headers):
    r = metrics_app.test_client().get("/metrics", headers=headers)
    assert r.status_code == 401
    assert "etl_" not in r.get_data(as_text=True)


def test_the_metrics_key_opens_metrics_and_nothing_else(metrics_app, auth):
    client = metrics_app.test_client()
    scraper = {"Authorization": f"Bearer {METRICS_KEY}"}
    assert client.get("/metrics", headers=scraper).status_code == 200
    assert client.get("/metrics", headers=auth).status_code == 200  # an API key reads them too
    assert client.get("/api/v1/record-types", headers=scraper).status_code == 401
    assert client.post("/api/v1/students", json=student("m-key"), headers=scraper).status_code == 401


def test_queue_depth_reads_the_prefixed_lists_of_every_priority(client, auth, api_redis_url, broker_prefix):
    r = redis.Redis.from_url(api_redis_url)
    r.rpush(f"{broker_prefix}etl", *[b"m"] * 3)
    r.rpush(f"{broker_prefix}etl\x06\x166", b"m")  # kombu's list for priority 6
    r.rpush(f"{broker_prefix}jobs\x06\x169", *[b"m"] * 2)
    r.rpush(f"{broker_prefix}dead_letter", b"m")
    r.rpush(f"{broker_prefix}lookups", *[b"m"] * 5)
    r.rpush(f"{broker_prefix}uploads", *[b"m"] * 6)
    r.hset(f"{broker_prefix}unacked", mapping={"tag-1": b"m", "tag-2": b"m"})
    other = f"other-{uuid.uuid4().hex[:8]}:"
    r.rpush(f"{other}etl", *[b"m"] * 7)  # another deployment's queue: not ours
    try:
        samples = scrape(client, auth)
    finally:
        r.delete(f"{other}etl")
    assert value(samples, "etl_queue_messages", queue="etl") == 4
    assert value(samples, "etl_queue_messages", queue="jobs") == 2
    assert value(samples, "etl_queue_messages", queue="dead_letter") == 1
    assert value(samples, "etl_queue_messages", queue="lookups") == 5
    assert value(samples, "etl_queue_messages", queue="uploads") == 6
    assert value(samples, "etl_queue_messages", queue="unacked") == 2
    assert value(samples, "etl_redis_up") == 1


def test_task_durations_add_up_from_every_process_into_one_histogram(app, client, auth):
    """Two "processes" (two task objects and Redis as the only shared state) observe a stage;
    the scrape shows one histogram with both."""
    runtime = app.extensions["etl"]
    task = SimpleNamespace(name="etl.persist", app=SimpleNamespace(etl=runtime))
    for task_id, state in (("a", "SUCCESS"), ("b", "SUCCESS"), ("c", "RETRY")):
        stage_metrics.task_started(task_id=task_id)
        time.sleep(0.012)
        stage_metrics.task_finished(task_id=task_id, task=task, state=state)
    stage_metrics.task_finished(task_id="never-started", task=task, state="SUCCESS")  # no prerun: ignored
    samples = scrape(client, auth)
    assert value(samples, "etl_task_duration_seconds_count", task="etl.persist") == 3
    assert value(samples, "etl_task_duration_seconds_bucket", task="etl.persist", le="0.01") == 0
    assert value(samples, "etl_task_duration_seconds_bucket", task="etl.persist", le="+Inf") == 3
    assert 0.036 <= value(samples, "etl_task_duration_seconds_sum", task="etl.persist") < 3
    assert value(samples, "etl_task_runs_total", task="etl.persist", state="SUCCESS") == 2
    assert value(samples, "etl_task_runs_total", task="etl.persist", state="RETRY") == 1


def test_histogram_buckets_are_cumulative_and_end_at_inf():
    hist = stage_metrics.RedisHistogram("h", "", ["task"], (0.1, 1))
    fields = {b"t\t0.1": b"2", b"t\t1.0": b"3", b"t\t+Inf": b"1", b"t\tsum": b"7.5"}
    (sample_set,) = [hist.family(fields)]
    got = {(s.name, s.labels.get("le")): s.value for s in sample_set.samples}
    assert got[("h_bucket", "0.1")] == 2
    assert got[("h_bucket", "1.0")] == 5
    assert got[("h_bucket", "+Inf")] == 6
    assert got[("h_count", None)] == 6
    assert got[("h_sum", None)] == 7.5


def test_record_counts_come_from_the_tables_and_refusals_from_redis(client, auth, unique):
    before = scrape(client, auth)
    r = client.post("/api/v1/students/batch", json=[student(unique), {"student_id": "bad id"}], headers=auth)
    assert r.status_code == 202
    r = client.post("/api/v1/students/batch", json=[{"student_id": "bad 1"}, {"student_id": "bad 2"}], headers=auth)
    assert r.status_code == 422  # nothing stored: no ingestion row counts these two
    after = scrape(client, auth)

    def delta(name):
        return (value(after, name, record_type="students") or 0) - (value(before, name, record_type="students") or 0)

    assert delta("etl_records_accepted_total") == 1
    assert delta("etl_records_rejected_total") == 3
    assert delta("etl_records_received_total") == 4
    assert delta("etl_outbox_unsettled_records") == 1  # no worker in this test
    assert value(after, "etl_api_requests_total", endpoint="ingest.post_batch", status="422") == 1
    assert value(after, "etl_database_up") == 1


def test_job_runs_are_counted_by_status_with_failures(client, auth, engine):
    job = "job-" + uuid.uuid4().hex[:8]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO job_runs (job, window_start, window_end, trigger, status, started_at, finished_at) "
                "SELECT :job, current_date, current_date, 'cli', s, now(), "
                "CASE WHEN s = 'running' THEN NULL ELSE to_timestamp(1700000000) END "
                "FROM unnest(ARRAY['succeeded', 'succeeded', 'failed', 'running']) s"
            ),
            {"job": job},
        )
    samples = scrape(client, auth)
    assert value(samples, "etl_job_runs_total", job=job, status="succeeded") == 2
    assert value(samples, "etl_job_runs_total", job=job, status="failed") == 1
    assert value(samples, "etl_job_runs_total", job=job, status="running") == 1
    assert value(samples, "etl_job_failures_total", job=job) == 1
    assert value(samples, "etl_job_last_success_timestamp_seconds", job=job) == 1700000000


def test_every_registered_record_type_has_a_sample_when_it_is_zero(app, client, auth, monkeypatch):
    registry = app.extensions["etl"].registry
    names = registry.names()
    monkeypatch.setattr(registry, "names", lambda: [*names, "idle_type"])  # registered, never sent
    after = scrape(client, auth)
    for name in (
        "etl_outbox_unsettled_records",
        "etl_outbox_oldest_unsettled_seconds",
        "etl_records_dead",
        "etl_records_accepted_total",
        "etl_records_persisted_total",
        "etl_records_dead_lettered_total",
    ):
        assert value(after, name, record_type="idle_type") == 0, name
        assert all(value(after, name, record_type=t) is not None for t in names), name
    for error_type in errors.ERROR_TYPES:
        assert value(after, "etl_dead_letters_open", record_type="idle_type", error_type=error_type) == 0


def test_the_restarts_of_the_processes_of_etl_app_run_are_counted_by_process(client, auth, tmp_path, monkeypatch):
    monkeypatch.setenv("ETL_VAR_DIR", str(tmp_path))
    samples = scrape(client, auth)  # no supervisor's file: another process manager runs this web
    assert not [name for name, _ in samples if name.startswith("etl_process_restarts")]
    write_restarts(restarts_path(), {"web": 0, "worker": 1})  # as `etl-app run` does, this process its supervisor
    samples = scrape(client, auth)
    assert value(samples, "etl_process_restarts_total", process="worker") == 1
    assert value(samples, "etl_process_restarts_total", process="web") == 0
