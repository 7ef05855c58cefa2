"""Histograms and counters kept in Redis, so that every process adds to the same numbers.

A worker's prefork children, the gunicorn workers and the hosts they run on each count into one
Redis hash per metric (``<ETL_BROKER_KEY_PREFIX>etl:metrics:<name>``, on the cache Redis), and
``GET /metrics`` reads the hashes at scrape time: whichever web process answers, the scrape is
the sum over all of them. A histogram observation is one transaction (MULTI/EXEC) of
``HINCRBY`` on its bucket and ``HINCRBYFLOAT`` on its sum, so a scrape (one ``HGETALL``) never
sees a count without its sum.

Task durations are measured here, in the worker, by Celery's ``task_prerun`` / ``task_postrun``
signals (connected from :mod:`etl_app.runtime.celery_app`): every task the worker runs is observed under
its name (etl.validate, etl.enrich, etl.persist, etl.dead_letter.record, the beat jobs), and
counted by its end state (SUCCESS, RETRY, FAILURE, ...). Redis errors never fail a task: the
observation is lost and logged.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

log = logging.getLogger(__name__)

# Seconds; the last bucket (+Inf) is implied.
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
REQUEST_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

_SEP = "\t"  # between the label values and the field's kind in a hash field; no label holds one
_SUM = "sum"
_INF = "+Inf"


def metrics_key(prefix: str, name: str) -> str:
    return f"{prefix}etl:metrics:{name}"


def _bound(value: float) -> str:
    return _INF if math.isinf(value) else repr(float(value))


class RedisHistogram:
    """A histogram whose buckets and sum live in a Redis hash: fields ``<labels>\\t<le>`` hold
    the observations that fell in that bucket alone (made cumulative when read), ``<labels>\\tsum``
    their sum."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = (*(float(b) for b in buckets), math.inf)

    def observe(self, pipe: Any, prefix: str, labels: Sequence[str], seconds: float) -> None:
        """Queue one observation on ``pipe`` (a Redis pipeline the caller executes)."""
        self.add(pipe, prefix, {tuple(labels): [seconds]})

    def add(self, pipe: Any, prefix: str, observations: dict[tuple[str, ...], list[float]]) -> None:
        key = metrics_key(prefix, self.name)
        for labels, values in observations.items():
            head = _SEP.join(labels)
            counts: dict[str, int] = {}
            for seconds in values:
                le = next(b for b in self.bounds if seconds <= b)
                counts[_bound(le)] = counts.get(_bound(le), 0) + 1
            for le, n in counts.items():
                pipe.hincrby(key, f"{head}{_SEP}{le}", n)
            pipe.hincrbyfloat(key, f"{head}{_SEP}{_SUM}", sum(values))

    def family(self, fields: dict[bytes, bytes]) -> HistogramMetricFamily:
        """The metric family from the hash's fields (``HGETALL``)."""
        per_labels: dict[tuple[str, ...], dict[str, float]] = {}
        for raw_field, raw_value in fields.items():
            *labels, kind = raw_field.decode().split(_SEP)
            if len(labels) == len(self.labelnames):
                per_labels.setdefault(tuple(labels), {})[kind] = float(raw_value)
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, values in sorted(per_labels.items()):
            running = 0.0
            buckets = []
            for bound in self.bounds:
                running += values.get(_bound(bound), 0)
                buckets.append((_bound(bound), running))
            family.add_metric(list(labels), buckets, values.get(_SUM, 0.0))
        return family


class RedisCounter:
    """A counter in a Redis hash: one field per label values."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)

    def inc(self, pipe: Any, prefix: str, labels: Sequence[str], n: int = 1) -> None:
        pipe.hincrby(metrics_key(prefix, self.name), _SEP.join(labels), n)

    def family(self, fields: dict[bytes, bytes]) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for raw_field, raw_value in sorted(fields.items()):
            labels = raw_field.decode().split(_SEP)
            if len(labels) == len(self.labelnames):
                family.add_metric(labels, float(raw_value))
        return family


def read(client: redis.Redis, prefix: str, metrics: Iterable[RedisHistogram | RedisCounter]) -> list[Any]:
    """Every metric's family, read in one round trip."""
    metrics = list(metrics)
    pipe = client.pipeline(transaction=False)
    for metric in metrics:
        pipe.hgetall(metrics_key(prefix, metric.name))
    return [metric.family(fields) for metric, fields in zip(metrics, pipe.execute(), strict=True)]


# -- task durations, measured in the worker --------------------------------------------------

TASK_SECONDS = RedisHistogram(
    "etl_task_duration_seconds",
    "Time a worker spent running a task (pipeline stages, dead-letter consumer, jobs), all workers",
    ["task"],
    TASK_BUCKETS,
)
TASK_RUNS = RedisCounter(
    "etl_task_runs", "Task runs by end state (SUCCESS, RETRY, FAILURE, ...), all workers", ["task", "state"]
)
TASK_METRICS = (TASK_SECONDS, TASK_RUNS)

_started: dict[str, float] = {}  # task id → perf_counter at prerun, in this process
_started_lock = threading.Lock()


def task_started(task_id: str | None = None, **_kwargs: Any) -> None:
    if task_id is not None:
        with _started_lock:
            _started[task_id] = time.perf_counter()


def task_finished(task_id: str | None = None, task: Any = None, state: str | None = None, **_kwargs: Any) -> None:
    with _started_lock:
        started = _started.pop(task_id, None) if task_id is not None else None
    runtime = getattr(getattr(task, "app", None), "etl", None)
    if started is None or runtime is None:
        return
    seconds = time.perf_counter() - started
    prefix = runtime.settings.broker_key_prefix
    try:
        pipe = runtime.cache.pipeline(transaction=True)
        TASK_SECONDS.observe(pipe, prefix, [task.name], seconds)
        TASK_RUNS.inc(pipe, prefix, [task.name, state or "UNKNOWN"])
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("task metrics not recorded for %s: %s", task.name, exc)


def connect() -> None:
    """Measure every task this process runs (called once, from :mod:`etl_app.runtime.celery_app`)."""
    from celery.signals import task_postrun, task_prerun

    task_prerun.connect(task_started, weak=False, dispatch_uid="etl_stage_metrics_prerun")
    task_postrun.connect(task_finished, weak=False, dispatch_uid="etl_stage_metrics_postrun")
