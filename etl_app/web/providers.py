"""The lookup providers as the API and the Providers page show them, and the breaker reset both
offer (audited ``breaker_reset`` under the request's key)."""

from __future__ import annotations

import redis

from etl_app.lookups import reset_breaker
from etl_app.lookups.registry import describe, providers
from etl_app.web.context import ApiError, audited, current_runtime


def _known():
    runtime = current_runtime()
    return providers(runtime.settings, runtime.registry)


def _unavailable(exc: Exception) -> ApiError:
    return ApiError(503, "redis_unavailable", f"the lookup metrics are in Redis, which did not answer: {exc}")


def listed_providers() -> list[dict]:
    """Every configured provider with its counters and breaker (ApiError 503 without Redis)."""
    runtime = current_runtime()
    try:
        return describe(runtime.cache, runtime.settings.broker_key_prefix, _known())
    except redis.RedisError as exc:
        raise _unavailable(exc) from None


def reset_provider(provider: str) -> dict:
    """Close ``provider``'s breaker now, audited ``breaker_reset`` for this request's key (the API
    and the Providers page); the provider as listed. ApiError 404 unknown, 503 without Redis."""
    known = _known()
    if provider not in known:
        raise ApiError(404, "unknown_provider", f"no provider {provider!r}; the providers are {', '.join(known)}")
    runtime = current_runtime()
    prefix = runtime.settings.broker_key_prefix
    try:
        with audited("breaker_reset", {"provider": provider}):
            reset_breaker(runtime.cache, prefix, known[provider])
        [listed] = describe(runtime.cache, prefix, {provider: known[provider]})
    except redis.RedisError as exc:  # the audit row says failed
        raise _unavailable(exc) from None
    return listed
