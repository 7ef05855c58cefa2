"""The HTTP API: blueprints, JSON provider, error handlers and authentication."""

from __future__ import annotations

from flask import Flask, Response, request

from etl_app.api import (
    audit,
    auth,
    bodylimit,
    dead_letter_groups,
    dead_letters,
    health,
    ingest,
    metrics,
    noop,
    openapi,
    providers,
    ratelimit,
    read,
    rejections,
    reports,
    uploads,
    waiting,
)
from etl_app.api.common import bad_parameter
from etl_app.api.errors import register_error_handlers
from etl_app.api.jobs import bp as jobs_bp
from etl_app.api.jsonprovider import OrjsonProvider
from etl_app.api.spec import declared_query
from etl_app.web.context import ApiError


def init_app(app: Flask) -> None:
    app.json = OrjsonProvider(app)
    app.url_map.converters["record_type"] = ingest.RecordTypeName
    register_error_handlers(app)
    bodylimit.init_app(app)
    metrics.init_app(app)  # first, so that refused requests are counted too
    auth.init_app(app)  # a missing or wrong key: 401
    ratelimit.init_app(app)  # then every request of a known key counts, a refused one too
    auth.init_rights(app)  # then a key whose role lacks the right: 403
    app.before_request(_refuse_nul)  # after the key check: a refused key is a 401 whatever it sent
    app.before_request(_refuse_undeclared_query)
    app.after_request(_forbid_framing)
    for module in (health, read, rejections, dead_letters, reports, openapi, metrics):
        app.register_blueprint(module.bp)
    app.register_blueprint(dead_letter_groups.bp)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(audit.bp)
    app.register_blueprint(providers.bp)
    app.register_blueprint(waiting.bp)
    if app.extensions["etl"].settings.bench_noop:  # before the ingest rules: "_noop" is no record type
        app.register_blueprint(noop.bp)
    # Last: a record type's name in their URLs is any name but the paths above (ingest.RecordTypeName).
    app.register_blueprint(uploads.bp)
    app.register_blueprint(ingest.bp)


def _forbid_framing(response: Response) -> Response:
    """No answer of this app may be shown in another site's frame (clickjacking): every one says
    so, for old browsers too; a page with a policy of its own (the pages', /docs') forbids it there."""
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    return response


def _refuse_undeclared_query() -> None:
    """A query parameter the operation's OpenAPI document does not name is a 400 naming it, on
    every documented route (a misspelt filter must not widen what a request reads or acts on)."""
    if not request.environ.get("QUERY_STRING") or not request.args or request.endpoint is None:
        return
    declared = declared_query(request.endpoint, request.view_args or {})
    if declared is None:
        return
    unknown = sorted(set(request.args) - declared)
    if unknown:
        known = f"they are {', '.join(sorted(declared))}" if declared else "this operation takes none"
        raise bad_parameter(unknown[0], f"is not a parameter; {known}")


def _refuse_nul() -> None:
    """PostgreSQL refuses NUL in text, so a key or an id holding one would end as a 500 in the first
    query that uses it: in the path it names nothing (404), in a query value it is a 400."""
    if "\x00" in request.path:
        raise ApiError(404, "not_found", "no such resource: the path contains NUL")
    if request.environ.get("QUERY_STRING") and any("\x00" in value for value in request.args.values()):
        raise ApiError(400, "invalid_parameter", "a query parameter contains NUL")
