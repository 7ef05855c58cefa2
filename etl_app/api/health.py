"""Liveness and readiness. /ready also says whether the backlog is full, and why
(:mod:`etl_app.ingest.backlog`); a full backlog does not make the service unready: it still
answers reads and the operator's pages, and refuses submits with 429 until the workers catch up.

The cache Redis (``REDIS_URL``) is checked too, but does not make the web unready either: while
it is down the API still takes records (202: they are in the outbox) and the pipeline goes on
(a chunk's values travel in its messages, :mod:`etl_app.pipeline.stash`); with a Redis broker
it is usually the broker's server as well, and ``broker`` says so."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, current_app

from etl_app.api.bodies import Health, Ready
from etl_app.api.spec import operation, reply

bp = Blueprint("health", __name__)


@bp.get("/health")
@operation(summary="Liveness", open=True, responses={200: ("up", Health)})
def health():
    return reply(Health, {"status": "ok"})


@bp.get("/ready")
@operation(
    summary="Readiness: database and broker reachable (the cache reported); whether the backlog is full, and why",
    open=True,
    responses={200: ("ready", Ready), 503: ("not ready", Ready)},
)
def ready():
    runtime = current_app.extensions["etl"]
    checks = {}
    try:
        with runtime.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        with runtime.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    try:
        runtime.cache.ping()  # gives up within a second (etl_app.runtime._cache_client)
        checks["cache"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["cache"] = f"unavailable: {type(exc).__name__}"
    backlog = runtime.backlog.read() if checks["database"] == "ok" else None
    shown = None if backlog is None else {**backlog.as_dict(), "message": backlog.message()}
    return reply(
        Ready, {"status": "ready" if ok else "not_ready", "checks": checks, "backlog": shown}, 200 if ok else 503
    )
