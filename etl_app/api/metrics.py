"""GET /metrics in Prometheus text format.

Outbox and dead-letter gauges are read from PostgreSQL at scrape time, so every web process
reports the same truth. Request counters and latencies are per web process (each gunicorn
worker has its own; sum them in the query).
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from etl_app.models import sql

bp = Blueprint("metrics", __name__)

_OUTBOX = sql(
    "SELECT record_type, count(*), coalesce(extract(epoch FROM now() - min(received_at)), 0) "
    "FROM raw_records WHERE status = :RECEIVED GROUP BY record_type"
)
_DEAD = sql("SELECT record_type, error_type, count(*) FROM dead_letters WHERE status = :OPEN GROUP BY 1, 2")


class _DatabaseCollector:
    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self):
        unsettled = GaugeMetricFamily(
            "etl_outbox_unsettled_records", "Accepted records not yet persisted or dead", labels=["record_type"]
        )
        oldest = GaugeMetricFamily(
            "etl_outbox_oldest_unsettled_seconds", "Age of the oldest unsettled record", labels=["record_type"]
        )
        dead = GaugeMetricFamily("etl_dead_letters_open", "Open dead letters", labels=["record_type", "error_type"])
        up = GaugeMetricFamily("etl_database_up", "1 if the database answered this scrape")
        try:
            with self.app.extensions["etl"].engine.connect() as conn:
                for record_type, n, age in conn.execute(_OUTBOX):
                    unsettled.add_metric([record_type], n)
                    oldest.add_metric([record_type], float(age))
                for record_type, error_type, n in conn.execute(_DEAD):
                    dead.add_metric([record_type, error_type], n)
            up.add_metric([], 1)
        except sa.exc.SQLAlchemyError:
            up.add_metric([], 0)
        yield from (unsettled, oldest, dead, up)


def init_app(app: Flask) -> None:
    registry = CollectorRegistry(auto_describe=False)
    requests_total = Counter("etl_api_requests", "API requests", ["endpoint", "status"], registry=registry)
    latency = Histogram(
        "etl_api_request_seconds",
        "API request latency",
        ["endpoint"],
        registry=registry,
        buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )
    records = Counter(
        "etl_api_records", "Records accepted or rejected by the API", ["record_type", "outcome"], registry=registry
    )
    registry.register(_DatabaseCollector(app))
    app.extensions["etl_metrics"] = {"registry": registry, "records": records}

    @app.before_request
    def _start_timer():
        g.etl_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        endpoint = request.endpoint or "unknown"
        requests_total.labels(endpoint, str(response.status_code)).inc()
        if "etl_started" in g:
            latency.labels(endpoint).observe(time.perf_counter() - g.etl_started)
        return response


def count_records(record_type: str, accepted: int, rejected: int) -> None:
    metric = current_app.extensions["etl_metrics"]["records"]
    if accepted:
        metric.labels(record_type, "accepted").inc(accepted)
    if rejected:
        metric.labels(record_type, "rejected").inc(rejected)


@bp.get("/metrics")
def metrics():
    return Response(generate_latest(current_app.extensions["etl_metrics"]["registry"]), mimetype=CONTENT_TYPE_LATEST)
