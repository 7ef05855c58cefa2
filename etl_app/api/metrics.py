"""GET /metrics in Prometheus text format, behind a key.

Every number is read at scrape time from where all processes of all hosts write it, so any web
process answers with the same truth and nothing needs summing across processes:

- record counts by record type from PostgreSQL (``ingestions`` for received / accepted /
  rejected; ``raw_records`` by status through the ``(ingestion_id, status)`` index and the
  partial index on unsettled records; ``dead_letters``; ``job_runs``), in one read-only
  snapshot, so that accepted = unsettled + persisted + dead within a scrape;
- queue depths from the broker: a Redis broker's lists (``LLEN`` of each queue's lists, under the
  key prefix), or RabbitMQ's count of each queue (a passive ``queue.declare`` each, on a connection
  made for the scrape);
- task durations and API requests from Redis hashes every process adds to
  (:mod:`etl_app.runtime.stage_metrics`);
- external lookups per provider (``etl_lookup_*``, :func:`etl_app.lookups.families`): four
  counter hashes and one breaker read per provider, from the cache Redis;
- backpressure (``etl_backlog_*``): this web process's last reading of the backlog
  (:mod:`etl_app.ingest.backlog`), taken at most every second whoever asks;
- under `etl-app run` only, the restarts of its processes, from the file its supervisor keeps
  under ``ETL_VAR_DIR`` (:mod:`etl_app.local.supervisor`).

A scrape is a handful of statements; what they cost on a large outbox is in README (Metrics).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import ClassVar

import redis
import sqlalchemy as sa
from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from etl_app import errors
from etl_app.api.spec import operation
from etl_app.ingest.backlog import AGE, RECORDS
from etl_app.local.supervisor import read_restarts, restarts_path
from etl_app.lookups import families as lookup_families
from etl_app.lookups.registry import providers as lookup_providers
from etl_app.models import DEAD, PERSISTED, REJECTED, sql
from etl_app.pipeline.queues import BrokerUnavailable, QueueDepths, depth_family, queue_depths
from etl_app.runtime import stage_metrics

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)


# How long a scrape waits for the broker's queue depths (connect, then each read).
BROKER_TIMEOUT_SECONDS = 2.0
# Statement timeout of a scrape's snapshot: a slow database gives `etl_database_up 0`, not a hung scrape.
SCRAPE_TIMEOUT_MS = 5_000

_INGESTED = sql("SELECT record_type, sum(accepted), sum(rejected) FROM ingestions GROUP BY record_type")
# Settled records: an index-only scan of ix_raw_records_ingestion_id_status (the heap is not
# read), grouped per ingestion and joined to the small ingestions table for the record type.
_SETTLED = sql(
    "SELECT i.record_type, r.status, sum(r.n) "
    "FROM (SELECT ingestion_id, status, count(*) AS n FROM raw_records "
    "      WHERE status IN (:PERSISTED, :DEAD, :REJECTED) GROUP BY ingestion_id, status) r "
    "JOIN ingestions i ON i.id = r.ingestion_id GROUP BY 1, 2"
)
# Unsettled records: the partial index ix_raw_records_unsettled; costs what the backlog holds.
_UNSETTLED = sql(
    "SELECT record_type, count(*), coalesce(extract(epoch FROM now() - min(received_at)), 0) "
    "FROM raw_records WHERE status = :RECEIVED GROUP BY record_type"
)
_DEAD_LETTERS = sql(
    "SELECT record_type, error_type, count(*), count(*) FILTER (WHERE status = :OPEN) FROM dead_letters GROUP BY 1, 2"
)
_HAS_JOB_RUNS = sa.text("SELECT to_regclass('job_runs') IS NOT NULL")
_JOB_RUNS = sql("SELECT job, status, count(*), extract(epoch FROM max(finished_at)) FROM job_runs GROUP BY job, status")

REQUESTS = stage_metrics.RedisCounter("etl_api_requests", "API requests, all web processes", ["endpoint", "status"])
REQUEST_SECONDS = stage_metrics.RedisHistogram(
    "etl_api_request_seconds", "API request latency, all web processes", ["endpoint"], stage_metrics.REQUEST_BUCKETS
)
# Rejected records of requests that stored nothing (every record invalid: a 422, no ingestion row).
REFUSED = stage_metrics.RedisCounter("etl_api_refused_records", "Records of requests that stored none", ["record_type"])
REDIS_METRICS = (*stage_metrics.TASK_METRICS, REQUESTS, REQUEST_SECONDS)


def _counter(name: str, documentation: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, labels=labels)


class _DatabaseCollector:
    """Record, dead-letter and job-run counts: one read-only snapshot per scrape."""

    def __init__(self, app: Flask, requests: _RequestRecorder) -> None:
        self.app = app
        self.requests = requests

    def _refused(self) -> dict[str, int] | None:
        """Rejections no ingestion row holds (see :data:`REFUSED`); None if Redis did not answer."""
        runtime = self.app.extensions["etl"]
        self.requests.flush()
        try:
            fields = runtime.cache.hgetall(stage_metrics.metrics_key(runtime.settings.broker_key_prefix, REFUSED.name))
        except redis.RedisError:
            return None
        return {k.decode(): int(v) for k, v in fields.items()}

    def collect(self):
        received = _counter("etl_records_received", "Records sent to the API (accepted + rejected)", ["record_type"])
        accepted = _counter("etl_records_accepted", "Records accepted into the outbox", ["record_type"])
        rejected = _counter("etl_records_rejected", "Records refused by the API or at parsing", ["record_type"])
        persisted = _counter("etl_records_persisted", "Accepted records stored in their table", ["record_type"])
        dead_lettered = _counter(
            "etl_records_dead_lettered", "Records ever dead-lettered (each record once)", ["record_type"]
        )
        dead = GaugeMetricFamily("etl_records_dead", "Accepted records dead now (not replayed)", labels=["record_type"])
        unsettled = GaugeMetricFamily(
            "etl_outbox_unsettled_records", "Accepted records not yet persisted or dead", labels=["record_type"]
        )
        oldest = GaugeMetricFamily(
            "etl_outbox_oldest_unsettled_seconds", "Age of the oldest unsettled record", labels=["record_type"]
        )
        open_dead = GaugeMetricFamily(
            "etl_dead_letters_open", "Open dead letters", labels=["record_type", "error_type"]
        )
        job_runs = _counter("etl_job_runs", "Scheduled job runs by status", ["job", "status"])
        job_failures = _counter("etl_job_failures", "Scheduled job runs that failed", ["job"])
        job_success = GaugeMetricFamily(
            "etl_job_last_success_timestamp_seconds", "When the job's last successful run finished", labels=["job"]
        )
        up = GaugeMetricFamily("etl_database_up", "1 if the database answered this scrape")
        refused = self._refused()
        families = [accepted, persisted, dead_lettered, dead, unsettled, oldest, open_dead]
        if refused is not None:  # without Redis, no received / rejected rather than counts that go down
            families[1:1] = [received, rejected]
        try:
            engine = self.app.extensions["etl"].engine
            with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
                conn.execute(sa.text(f"SET LOCAL statement_timeout = {SCRAPE_TIMEOUT_MS}"))
                settled: dict[tuple[str, str], int] = {}
                for record_type, status, n in conn.execute(_SETTLED):
                    settled[(record_type, status)] = int(n)
                ingested = {t: (int(a), int(r)) for t, a, r in conn.execute(_INGESTED)}
                # every registered type has a sample, 0 included: an absent series is not a zero
                types = set(self.app.extensions["etl"].registry.names())
                for record_type in sorted(ingested.keys() | (refused or {}).keys() | types):
                    n_accepted, n_rejected = ingested.get(record_type, (0, 0))
                    n_rejected += settled.get((record_type, REJECTED), 0) + (refused or {}).get(record_type, 0)
                    received.add_metric([record_type], int(n_accepted) + n_rejected)
                    accepted.add_metric([record_type], int(n_accepted))
                    rejected.add_metric([record_type], n_rejected)
                    persisted.add_metric([record_type], settled.get((record_type, PERSISTED), 0))
                    dead.add_metric([record_type], settled.get((record_type, DEAD), 0))
                backlog = {t: (n, float(age)) for t, n, age in conn.execute(_UNSETTLED)}
                for record_type in sorted(backlog.keys() | types):
                    n, age = backlog.get(record_type, (0, 0.0))
                    unsettled.add_metric([record_type], n)
                    oldest.add_metric([record_type], age)
                ever: dict[str, int] = dict.fromkeys(types, 0)
                now_open = {(t, e): 0 for t in types for e in errors.ERROR_TYPES}
                for record_type, error_type, n, n_open in conn.execute(_DEAD_LETTERS):
                    ever[record_type] = ever.get(record_type, 0) + n
                    if n_open or record_type in types:
                        now_open[(record_type, error_type)] = n_open
                for (record_type, error_type), n in sorted(now_open.items()):
                    open_dead.add_metric([record_type, error_type], n)
                for record_type, n in sorted(ever.items()):
                    dead_lettered.add_metric([record_type], n)
                # job_runs arrived with migration 0005; a database not migrated yet has no job metrics.
                if conn.execute(_HAS_JOB_RUNS).scalar():
                    families += [job_runs, job_failures, job_success]
                    failures: dict[str, int] = {}
                    for job, status, n, last_finished in conn.execute(_JOB_RUNS):
                        job_runs.add_metric([job, status], n)
                        failures[job] = failures.get(job, 0) + (n if status == "failed" else 0)
                        if status == "succeeded" and last_finished is not None:
                            job_success.add_metric([job], float(last_finished))
                    for job, n in sorted(failures.items()):
                        job_failures.add_metric([job], n)
            up.add_metric([], 1)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics: database not read: %s", exc)
            families = []
            up.add_metric([], 0)
        yield from (*families, up)


class _RedisCollector:
    """Queue depths from the broker (Redis or RabbitMQ); task durations and API requests from the
    cache Redis."""

    def __init__(self, app: Flask, requests: _RequestRecorder) -> None:
        self.app = app
        self.requests = requests
        self._providers: list | None = None

    @property
    def providers(self) -> list:
        if self._providers is None:
            runtime = self.app.extensions["etl"]
            self._providers = list(lookup_providers(runtime.settings, runtime.registry).values())
        return self._providers

    @property
    def broker(self) -> QueueDepths:
        return queue_depths(self.app.extensions["etl"].settings, BROKER_TIMEOUT_SECONDS)

    def _queue_depths(self):
        """``etl_queue_messages`` and ``etl_broker_up``: a broker that does not answer leaves the
        depths out (unknown, not 0)."""
        up = GaugeMetricFamily("etl_broker_up", "1 if the broker answered this scrape's queue depths")
        try:
            depths = self.broker.read()
        except BrokerUnavailable as exc:
            log.warning("metrics: broker queue depths not read: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [depth_family(depths), up]

    def collect(self):
        runtime = self.app.extensions["etl"]
        prefix = runtime.settings.broker_key_prefix
        yield from self._queue_depths()
        up = GaugeMetricFamily("etl_redis_up", "1 if the cache Redis answered this scrape")
        try:
            self.requests.flush()  # this process's latest requests; the others flush every second
            yield from stage_metrics.read(runtime.cache, prefix, REDIS_METRICS)
            yield from lookup_families(runtime.cache, prefix, self.providers)
            up.add_metric([], 1)
        except redis.RedisError as exc:
            log.warning("metrics: Redis not read: %s", exc)
            up.add_metric([], 0)
        yield up


class _BacklogCollector:
    """Backpressure (:mod:`etl_app.ingest.backlog`): whether this web process refuses submits now,
    why, the Retry-After it gives, the drain rate and the bounds; this process's last reading (no
    query of its own). Nothing when both bounds are off."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self):
        backlog = self.app.extensions["etl"].backlog.read()
        if backlog is None:
            return
        full = GaugeMetricFamily(
            "etl_backlog_full",
            "1 while submits and uploads are refused with 429 backlog_full, by reason: records (too many "
            "unsettled records), age (one waits too long)",
            labels=["reason"],
        )
        for reason in (RECORDS, AGE):
            full.add_metric([reason], 1 if reason in backlog.reasons else 0)
        retry = GaugeMetricFamily(
            "etl_backlog_retry_after_seconds", "The Retry-After a submit is told now (0: the backlog is not full)"
        )
        retry.add_metric([], backlog.retry_after or 0)
        counted = GaugeMetricFamily(
            "etl_backlog_records",
            "Unsettled records as the backpressure check counts them (up to its bound plus 5 minutes of draining)",
        )
        counted.add_metric([], backlog.records)
        bounds = GaugeMetricFamily(
            "etl_backlog_bound",
            "ETL_BACKLOG_MAX_RECORDS (records) and ETL_BACKLOG_MAX_AGE_SECONDS (age_seconds); 0: off",
            labels=["bound"],
        )
        bounds.add_metric(["records"], backlog.bounds.max_records)
        bounds.add_metric(["age_seconds"], backlog.bounds.max_age_seconds)
        families = [full, retry, counted, bounds]
        if backlog.drain_rate is not None:
            rate = GaugeMetricFamily(
                "etl_backlog_settled_per_second", "Records persisted or dead-lettered per second over the last minute"
            )
            rate.add_metric([], backlog.drain_rate)
            families.append(rate)
        yield from families


class _RestartsCollector:
    """``etl_process_restarts_total`` by process, when `etl-app run` supervises this web process
    (its file under ``ETL_VAR_DIR``); nothing under another process manager."""

    def collect(self):
        counts = read_restarts(restarts_path())
        if counts is None:
            return
        restarts = _counter(
            "etl_process_restarts", "Processes started again by `etl-app run` after they exited", ["process"]
        )
        for process, n in sorted(counts.items()):
            restarts.add_metric([process], n)
        yield restarts


class _RequestRecorder:
    """API request counts and latencies, added up here and sent to Redis once a second by one
    thread per process (and at each scrape): a request never waits on Redis. What a process
    holds when it dies, or while Redis is down, is lost (at most a second's worth)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._seconds: dict[tuple[str, ...], list[float]] = {}
        self._refused: dict[tuple[str], int] = {}

    def refused(self, record_type: str, n: int) -> None:
        _Flusher.ensure(self)
        with self._lock:
            self._refused[(record_type,)] = self._refused.get((record_type,), 0) + n

    def record(self, endpoint: str, status: int, seconds: float | None) -> None:
        _Flusher.ensure(self)
        with self._lock:
            key = (endpoint, str(status))
            self._counts[key] = self._counts.get(key, 0) + 1
            if seconds is not None:
                self._seconds.setdefault((endpoint,), []).append(seconds)

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
            seconds, self._seconds = self._seconds, {}
            refused, self._refused = self._refused, {}
        if not counts and not seconds and not refused:
            return
        runtime = self.app.extensions["etl"]
        prefix = runtime.settings.broker_key_prefix
        try:
            pipe = runtime.cache.pipeline(transaction=True)
            for labels, n in counts.items():
                REQUESTS.inc(pipe, prefix, labels, n)
            REQUEST_SECONDS.add(pipe, prefix, seconds)
            for labels, n in refused.items():
                REFUSED.inc(pipe, prefix, labels, n)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics: %d API requests not recorded: %s", sum(counts.values()), exc)


class _Flusher:
    """The one thread of a process that flushes its recorders every second (started by the
    first request the process serves: in a gunicorn worker, after the fork)."""

    INTERVAL = 1.0
    _lock = threading.Lock()
    _pid: int | None = None
    _recorders: ClassVar[weakref.WeakSet[_RequestRecorder]] = weakref.WeakSet()

    @classmethod
    def ensure(cls, recorder: _RequestRecorder) -> None:
        if cls._pid == os.getpid() and recorder in cls._recorders:
            return
        with cls._lock:
            if cls._pid != os.getpid():
                cls._pid = os.getpid()
                cls._recorders = weakref.WeakSet()
                threading.Thread(target=cls._run, args=(cls._pid,), name="etl-metrics-flush", daemon=True).start()
            cls._recorders.add(recorder)

    @classmethod
    def _run(cls, pid: int) -> None:
        while cls._pid == pid:
            time.sleep(cls.INTERVAL)
            for recorder in list(cls._recorders):
                recorder.flush()


def init_app(app: Flask) -> None:
    registry = CollectorRegistry(auto_describe=False)
    recorder = _RequestRecorder(app)
    registry.register(_DatabaseCollector(app, recorder))
    registry.register(_RedisCollector(app, recorder))
    registry.register(_BacklogCollector(app))
    registry.register(_RestartsCollector())
    app.extensions["etl_metrics"] = {"registry": registry, "requests": recorder}

    @app.before_request
    def _start_timer():
        g.etl_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        started = g.get("etl_started")
        seconds = time.perf_counter() - started if started is not None else None
        recorder.record(request.endpoint or "unknown", response.status_code, seconds)
        return response


def count_refused(record_type: str, n: int) -> None:
    """Records refused in a request that stored none (so no ingestion row counts them)."""
    if n:
        current_app.extensions["etl_metrics"]["requests"].refused(record_type, n)


@bp.get("/metrics")
@operation(summary="Prometheus metrics", responses={200: ("text format", {"text/plain": {"type": "string"}})})
def metrics():
    return Response(generate_latest(current_app.extensions["etl_metrics"]["registry"]), mimetype=CONTENT_TYPE_LATEST)
