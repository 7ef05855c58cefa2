"""Bearer API keys from ETL_API_KEYS, each with a role (etl_app.roles), compared in constant time;
/health and /ready are open.

A missing or unknown key is 401; a known key whose role lacks the endpoint's right
(etl_app.api.rights) is 403 ``forbidden``, and for an action of the audit trail (replay, discard,
job run) the refusal is recorded there. The key is named by its key id only (``g.api_key_id``, for
logs and the audit trail), never by itself.

GET /metrics also takes a key of ETL_METRICS_KEY (comma-separated, for rotation), which opens
nothing else: a Prometheus scraper holds a key that can read counts, not ingest or read records.
Any key with the ``read`` right reads /metrics too.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, g, request

from etl_app import audit
from etl_app.api.rights import AUDITED_ENDPOINTS, OPEN_ENDPOINTS, right_for
from etl_app.roles import ADMIN, ApiKey, find_key, parse_keys
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
        if request.endpoint in OPEN_ENDPOINTS or request.endpoint is None or request.blueprint == "ui":
            return None  # the pages sign in with a session of their own (etl_app.ui.session)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        key = find_key(token, keys) if scheme.lower() == "bearer" and token else None
        if key is None and request.endpoint == METRICS_ENDPOINT and token and scheme.lower() == "bearer":
            metrics_key = find_key(token, metrics_keys)
            if metrics_key is not None:
                g.api_key_id = metrics_key.id
                return None
        if key is None:
            raise ApiError(401, "unauthorized", "a valid API key is required: Authorization: Bearer <key>")
        g.api_key_id = key.id
        right = right_for(request.endpoint)
        if key.role == ADMIN or (right is not None and key.may(right)):
            return None
        _audit_refusal(key)
        needs = f"the {right!r} right" if right is not None else "an admin key"
        raise ApiError(403, "forbidden", f"this key's role ({key.role}) lacks {needs} for this endpoint")


def _audit_refusal(key: ApiKey) -> None:
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
                    key.id, action, target, outcome=audit.REFUSED, message=f"role {key.role}", request_id=request_id()
                ),
            )
    except Exception:
        log.exception("could not record a refused %s in the audit trail", action)
