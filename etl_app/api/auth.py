"""Bearer API keys from ETL_API_KEYS, each with a role (etl_app.roles), compared in constant time;
/health and /ready are open.

A missing or unknown key is 401, and counts as a failed authentication of the client's address
(etl_app.web.authfail): past ETL_AUTH_FAILURES_PER_MINUTE of them, that address gets 429
``too_many_failed_authentications`` with Retry-After for the rest of the minute, whatever key it
sends. A known key's request is then counted by the rate limit (etl_app.api.ratelimit), and
only after that is its role checked: a key whose role lacks the endpoint's right
(etl_app.api.rights) is 403 ``forbidden`` (so refused requests use up the key's rate limit too),
and for an action of the audit trail (replay, discard, job run) the refusal is recorded there,
counted in one row per key, action and minute (etl_app.audit). The key is named by its key id
only (``g.api_key_id``, for logs and the audit trail), never by itself.

GET /metrics also takes a key of ETL_METRICS_KEY (comma-separated, for rotation), which opens
nothing else: a Prometheus scraper holds a key that can read counts, not ingest or read records.
Any key with the ``read`` right reads /metrics too.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, g, request

from etl_app import audit
from etl_app.api.rights import AUDITED_ENDPOINTS, OPEN_ENDPOINTS, right_for
from etl_app.roles import ADMIN, ROLE_RIGHTS, ApiKey, find_key, parse_keys
from etl_app.web import authfail
from etl_app.web.context import ApiError, request_id

log = logging.getLogger(__name__)

METRICS_ENDPOINT = "metrics.metrics"
METRICS_ROLE = "metrics"  # a key of ETL_METRICS_KEY: /metrics and nothing else


def init_app(app: Flask) -> None:
    settings = app.extensions["etl"].settings
    keys = parse_keys(settings.api_keys)
    metrics_keys = tuple(ApiKey(k, ADMIN) for k in settings.metrics_keys)  # ADMIN: only to reuse find_key

    @app.before_request
    def _authenticate():
        if _open():
            return None
        try:
            authfail.refuse_if_throttled()
        except authfail.TooManyFailures as exc:
            raise ApiError(
                429, "too_many_failed_authentications", str(exc), headers={"Retry-After": str(exc.retry_after)}
            ) from None  # before the key is looked at: no answer tells a right guess from a wrong one
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        key = find_key(token, keys) if scheme.lower() == "bearer" and token else None
        if key is None and request.endpoint == METRICS_ENDPOINT and token and scheme.lower() == "bearer":
            metrics_key = find_key(token, metrics_keys)
            if metrics_key is not None:
                g.api_key_id = metrics_key.id
                g.api_key_metrics_only = True
                return None
        if key is None:
            authfail.failed()
            raise ApiError(401, "unauthorized", "a valid API key is required: Authorization: Bearer <key>")
        g.api_key_id, g.api_key_role = key.id, key.role
        return None


def _open() -> bool:
    """Endpoints without a key; the pages sign in with a session of their own (etl_app.ui.session)."""
    return request.endpoint in OPEN_ENDPOINTS or request.endpoint is None or request.blueprint == "ui"


def init_rights(app: Flask) -> None:
    """The role's check, registered after the rate limit: a refused request has been counted."""

    @app.before_request
    def _check_right():
        role = g.get("api_key_role")  # set by authentication only, and never on an open endpoint
        if role is None:
            if _open() or g.get("api_key_metrics_only"):
                return None
            # authentication lets no request through without a key: never open by mistake
            raise ApiError(401, "unauthorized", "a valid API key is required: Authorization: Bearer <key>")
        right = right_for(request.endpoint)
        if role == ADMIN or (right is not None and right in ROLE_RIGHTS[role]):
            return None
        _audit_refusal(g.api_key_id, role)
        needs = f"the {right!r} right" if right is not None else "an admin key"
        raise ApiError(403, "forbidden", f"this key's role ({role}) lacks {needs} for this endpoint")


def _audit_refusal(key_id: str, role: str) -> None:
    action = AUDITED_ENDPOINTS.get(request.endpoint or "")
    if action is None:
        return
    args = dict(request.view_args or {})
    if "name" in args:  # /jobs/<name>/run: the same target key as the runner's entries
        args["job"] = args.pop("name")
    target = {"path": request.path, **args}
    if action == "replay" and request.is_json and isinstance(request.get_json(silent=True), dict):
        action = "edit" if "payload" in request.get_json(silent=True) else action
    try:
        with current_app.extensions["etl"].engine.begin() as conn:
            audit.record(
                conn,
                audit.Entry(
                    key_id, action, target, outcome=audit.REFUSED, message=f"role {role}", request_id=request_id()
                ),
            )
    except Exception:
        log.exception("could not record a refused %s in the audit trail", action)
