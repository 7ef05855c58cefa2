"""Bearer API keys from ETL_API_KEYS, compared in constant time; /health and /ready are open.

GET /metrics also takes a key of ETL_METRICS_KEY (comma-separated, for rotation), which opens
nothing else: a Prometheus scraper holds a key that can read counts, not ingest or read records.
"""

from __future__ import annotations

import hmac

from flask import Flask, current_app, request

from etl_app.api.errors import ApiError

METRICS_ENDPOINT = "metrics.metrics"
# /docs is a static page holding no data; it asks for the key and sends it for /openapi.json.
OPEN_ENDPOINTS = {"health.health", "health.ready", "openapi.docs", "static"}


def _key_ok(presented: str, keys: tuple[str, ...]) -> bool:
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(presented.encode(), key.encode())
    return ok


def init_app(app: Flask) -> None:
    @app.before_request
    def _authenticate():
        if request.endpoint in OPEN_ENDPOINTS or request.endpoint is None:
            return None
        settings = current_app.extensions["etl"].settings
        keys = settings.api_keys
        if request.endpoint == METRICS_ENDPOINT:
            keys = (*keys, *settings.metrics_keys)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or not keys or not _key_ok(token.strip(), keys):
            raise ApiError(401, "unauthorized", "a valid API key is required: Authorization: Bearer <key>")
        return None
