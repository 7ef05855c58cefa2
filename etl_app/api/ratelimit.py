"""Rate limits per API key (flask-limiter, counters in Redis); off unless ETL_RATE_LIMIT is set.

ETL_RATE_LIMIT is in flask-limiter's notation (``100/second``, ``100/second;5000/minute``) and
applies to each key on its own: the counter is named by the key id (never the key). A request
over the limit is 429 ``rate_limited`` with Retry-After. /health, /ready and the other open
endpoints are never limited; unauthenticated requests are refused (401) before they are counted
(their addresses are throttled instead: etl_app.web.authfail). The limiter's check runs between
authentication and the role's check (etl_app.api.init_app), so a request its role refuses
(403) is counted like any other, and once over the limit it is 429 without an audit row.

The counters live in the Redis of REDIS_URL under ETL_BROKER_KEY_PREFIX. If that Redis is down,
the limiter counts in memory (per process) and tries Redis again later; an error of the limiter
never turns a request into a 500.
"""

from __future__ import annotations

import math
import time

from flask import Flask, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.errors import RateLimitExceeded

from etl_app.api.errors import error_response
from etl_app.api.rights import OPEN_ENDPOINTS
from etl_app.roles import key_id
from etl_app.web.context import current_key_id


def _limit_key() -> str:
    """The key id of the request's API key (etl_app.roles.key_id): set by authentication, which
    runs first; computed from the header only if a hook ahead of it let a request through."""
    ident = current_key_id()
    if ident:
        return ident
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return key_id(token.strip()) if scheme.lower() == "bearer" and token.strip() else "anonymous"


def _exempt() -> bool:
    """Open endpoints, and the operator's pages (their polling is not a client's load)."""
    return request.endpoint is None or request.endpoint in OPEN_ENDPOINTS or request.blueprint == "ui"


def _breached(limit: RequestLimit):
    window = limit.limit.get_expiry()
    try:  # reset_at is rounded up to the next second: never more than the window
        retry_after = min(window, max(1, math.ceil(limit.reset_at - time.time())))
    except Exception:  # noqa: BLE001 - the storage failed just now: the whole window, at most
        retry_after = window
    response = error_response(
        429,
        "rate_limited",
        f"this key is over its rate limit of {limit.limit}; retry in {retry_after} s",
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def init_app(app: Flask) -> Limiter | None:
    """Register the limiter after authentication (so requests are counted by a known key)."""
    settings = app.extensions["etl"].settings
    if not settings.rate_limit:
        return None
    limiter = Limiter(
        _limit_key,
        app=app,
        default_limits=[settings.rate_limit],
        default_limits_exempt_when=_exempt,
        storage_uri=settings.redis_url or settings.broker_url,
        storage_options={
            "key_prefix": f"{settings.broker_key_prefix}ratelimit",
            "socket_timeout": 1,
            "socket_connect_timeout": 1,
        },
        strategy="fixed-window",
        headers_enabled=False,
        swallow_errors=True,  # a Redis error lets the request through instead of a 500
        in_memory_fallback_enabled=True,  # and counts in this process until Redis is back
        on_breach=_breached,
    )

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded):
        return exc.get_response()

    app.extensions["etl_limiter"] = limiter
    return limiter
