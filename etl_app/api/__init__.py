"""The HTTP API: blueprints, JSON provider, error handlers and authentication."""

from __future__ import annotations

from flask import Flask

from etl_app.api import audit, auth, bodylimit, dead_letters, health, ingest, metrics, openapi, read, reports
from etl_app.api.errors import register_error_handlers
from etl_app.api.jobs import bp as jobs_bp
from etl_app.api.jsonprovider import OrjsonProvider


def init_app(app: Flask) -> None:
    app.json = OrjsonProvider(app)
    register_error_handlers(app)
    bodylimit.init_app(app)
    metrics.init_app(app)  # first, so that refused requests are counted too
    auth.init_app(app)
    for module in (health, ingest, read, dead_letters, reports, openapi, metrics):
        app.register_blueprint(module.bp)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(audit.bp)
