"""The Overview page: is data flowing? Records persisted, rejected and dead per minute over the
last hour (a stacked chart and the same numbers in a table), queue depth per queue, open dead
letters, the unsettled backlog and the age of its oldest record (and how many of it wait for a
parent), whether submits are refused because the backlog is full (backpressure: this web
process's last reading, :mod:`etl_app.ingest.backlog`), the workers seen, the last run of each
scheduled job, and a link to Flower. ``/ui/api/overview`` answers the same as JSON for
the page's polling (every 5 s).

Every reading is index-backed (docs/operator-pages.md, Speed): persisted per minute from the partial
index ``ix_raw_records_payload_kept`` (a record persisted within the last hour still has its
payload: retention keeps it at least a day), dead from ``ix_dead_letters_last_failed_at``,
rejected from ``ix_rejections_created_at``, the backlog from ``ix_raw_records_unsettled``, those
waiting for a parent from ``ix_raw_records_waiting_on``. Queue
depths are the ``/metrics`` reading (:class:`etl_app.pipeline.queues.QueueDepths`: the Redis
broker's lists, or RabbitMQ's counts). Workers are
asked by Celery's ``inspect ping`` in a thread of its own, at most every
:data:`WORKERS_TTL_SECONDS`, so a page never waits on them: it shows the last answer.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app, jsonify

from etl_app.jobs.registry import JOBS
from etl_app.jobs.runner import recent_runs
from etl_app.models import sql
from etl_app.names import QUEUES
from etl_app.pipeline.queues import BrokerUnavailable, queue_depths
from etl_app.ui.blueprint import bp, duration, exact_seconds, render
from etl_app.web.context import current_runtime

log = logging.getLogger(__name__)

MINUTES = 60
SERIES = ("persisted", "rejected", "dead")
WORKERS_TTL_SECONDS = 10.0
PING_TIMEOUT_SECONDS = 0.5
BROKER_TIMEOUT_SECONDS = 1.0  # a broker down costs the page at most this (connect, then each read)
STATEMENT_TIMEOUT_MS = 3000  # a slow database gives an error on the page, not a hung page

_PER_MINUTE = {
    "persisted": sql(
        "SELECT date_trunc('minute', updated_at) AS m, count(*) FROM raw_records "
        "WHERE status = :PERSISTED AND payload_dropped_at IS NULL AND updated_at >= :since GROUP BY 1"
    ),
    "rejected": sa.text(
        "SELECT date_trunc('minute', created_at) AS m, count(*) FROM rejections WHERE created_at >= :since GROUP BY 1"
    ),
    "dead": sa.text(
        "SELECT date_trunc('minute', last_failed_at) AS m, count(*) FROM dead_letters "
        "WHERE last_failed_at >= :since GROUP BY 1"
    ),
}
_OPEN_DEAD_LETTERS = sql("SELECT count(*) FROM dead_letters WHERE status = :OPEN")
# Of the backlog, the records waiting for a parent (the partial index ix_raw_records_waiting_on).
_WAITING = sql("SELECT count(*) FROM raw_records WHERE status = :RECEIVED AND waiting_on IS NOT NULL")
_BACKLOG = sql(
    "SELECT count(*), extract(epoch FROM now() - min(received_at)) FROM raw_records WHERE status = :RECEIVED"
)


def age_text(seconds: float | None) -> str:
    """An age as every page shows durations (``42.7s``, ``3m 20s``, ``2h 5m``, ``3d 4h``), never
    below zero (a clock a little ahead of the database's); ``—`` for None."""
    return duration(None if seconds is None else max(0.0, seconds))


def per_minute(conn: sa.Connection, now: datetime) -> list[dict[str, Any]]:
    """The last :data:`MINUTES` minutes up to ``now``'s, oldest first, each with its counts."""
    last = now.astimezone(UTC).replace(second=0, microsecond=0)
    since = last - timedelta(minutes=MINUTES - 1)
    minutes = [since + timedelta(minutes=i) for i in range(MINUTES)]
    counts = {name: dict(conn.execute(statement, {"since": since}).all()) for name, statement in _PER_MINUTE.items()}
    return [{"minute": m, **{name: int(counts[name].get(m, 0)) for name in SERIES}} for m in minutes]


class WorkersSeen:
    """The workers that answered Celery's ``inspect ping``, asked in a thread at most every
    :data:`WORKERS_TTL_SECONDS`; :meth:`read` answers at once with the last reading."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: list[str] | None = None
        self._checked_at: datetime | None = None
        self._error: str | None = None
        self._asked = 0.0
        self._asking = False

    def read(self, celery) -> dict[str, Any]:
        with self._lock:
            if not self._asking and time.monotonic() - self._asked >= WORKERS_TTL_SECONDS:
                self._asking = True
                threading.Thread(target=self._ask, args=(celery,), name="etl-ui-ping", daemon=True).start()
            return {"names": self._names, "checked_at": self._checked_at, "error": self._error}

    def _ask(self, celery) -> None:
        names, error = None, None
        try:
            answers = celery.control.inspect(timeout=PING_TIMEOUT_SECONDS).ping() or {}
            names = sorted(answers)
        except Exception as exc:  # noqa: BLE001 - a broker down or refusing: said on the page, never raised
            log.warning("overview: workers not asked: %s", exc)
            error = str(exc) or type(exc).__name__
        with self._lock:
            self._names, self._error = names, error
            self._checked_at = datetime.now(UTC)
            self._asked = time.monotonic()
            self._asking = False


def _workers() -> dict[str, Any]:
    seen = current_app.extensions.setdefault("etl_ui_workers", WorkersSeen())
    return seen.read(current_runtime().celery)


def _queues() -> tuple[list[dict[str, Any]], str | None]:
    runtime = current_runtime()
    try:
        depths = queue_depths(runtime.settings, BROKER_TIMEOUT_SECONDS).read()
    except BrokerUnavailable as exc:
        return [{"queue": queue, "messages": None} for queue in QUEUES], f"The broker did not answer: {exc}"
    return [{"queue": queue, "messages": int(n)} for queue, n in depths.items()], None


def backpressure_text(backlog: dict[str, Any] | None) -> str:
    """The Backpressure figure: ``off``, ``accepting``, or ``refusing submits · retry in 30 s``."""
    if backlog is None:
        return "off"
    if backlog["full"]:
        return f"refusing submits · retry in {backlog['retry_after']} s"
    return "accepting"


def bounds_text(backlog: dict[str, Any] | None) -> str:
    """``bounds: 1,000,000 records · 1 h`` (what is on), or why there are none."""
    if backlog is None:
        return "ETL_BACKLOG_MAX_RECORDS and ETL_BACKLOG_MAX_AGE_SECONDS are 0 (or the backlog was not read lately)"
    parts = []
    if backlog["max_records"]:
        parts.append(f"{backlog['max_records']:,} records")
    if backlog["max_age_seconds"]:
        parts.append(age_text(backlog["max_age_seconds"]))
    rate = backlog["settled_per_second"]
    drain = "" if rate is None else f"; settling {rate:,.1f} records/s"
    return f"bounds: {' · '.join(parts)}{drain}"


def _backlog() -> dict[str, Any] | None:
    reading = current_runtime().backlog.read()
    return None if reading is None else {**reading.as_dict(), "message": reading.message()}


def overview_data() -> dict[str, Any]:
    """Everything the page shows (the JSON of ``/ui/api/overview``)."""
    runtime = current_runtime()
    error = None
    minutes: list[dict[str, Any]] = []
    open_dead, unsettled, oldest, waiting = None, None, None, None
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in JOBS}
    try:
        with runtime.engine.connect() as conn, conn.begin():
            conn.execute(sa.text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            minutes = per_minute(conn, datetime.now(UTC))
            open_dead = conn.execute(_OPEN_DEAD_LETTERS).scalar_one()
            unsettled, oldest = conn.execute(_BACKLOG).one()
            waiting = conn.execute(_WAITING).scalar_one()
            runs = recent_runs(conn, list(JOBS), per_job=1)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("overview: database not read: %s", exc)
        error = "The database did not answer in time."
    queues, queue_error = _queues()
    oldest = None if oldest is None else float(oldest)
    backlog = _backlog()
    return {
        "minutes": minutes,
        "totals": {name: sum(m[name] for m in minutes) for name in SERIES},
        "open_dead_letters": open_dead,
        "unsettled": unsettled,
        "oldest_unsettled_seconds": oldest,
        "oldest_unsettled": age_text(oldest),
        "oldest_unsettled_exact": exact_seconds(oldest),
        "waiting_for_parents": waiting,
        "backlog": backlog,
        "backpressure": backpressure_text(backlog),
        "backpressure_bounds": bounds_text(backlog),
        "queues": queues,
        "queue_error": queue_error,
        "broker": "rabbitmq" if runtime.settings.broker_is_rabbitmq else "redis",
        "workers": _workers(),
        "jobs": [{"name": name, "last_run": (runs.get(name) or [None])[0]} for name in JOBS],
        "error": error,
    }


@bp.get("/overview")
def overview():
    return render("ui/overview.html", title="Overview", active="ui.overview", data=overview_data())


@bp.get("/api/overview")
def overview_json():
    return jsonify(overview_data())
