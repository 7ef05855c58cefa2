"""The configured lookup providers, and what an operator sees of them (``GET /api/v1/providers``,
``etl-app providers``).

The providers are the geocoder (``ETL_GEOCODER_URL``; listed while off, too) and any provider a
registered record type declares in its ``lookups``, built as enrich builds them
(:func:`etl_app.pipeline.lookups.providers_for`). Names are unique: the first declaration of a name
wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx
import redis

from etl_app.lookups.geocoder import geocoder_provider
from etl_app.lookups.metrics import stats
from etl_app.lookups.provider import Provider
from etl_app.pipeline.lookups import providers_for

CALL_OUTCOMES = ("found", "not_found", "failed")


class UnknownProvider(LookupError):
    pass


def providers(settings: Any, registry: Iterable[Any] | None = None) -> dict[str, Provider]:
    """Every configured provider by name: the geocoder first, then those the record types of
    ``registry`` (default: the process-wide one) declare."""
    if registry is None:
        from etl_app.record_types import get_registry

        registry = get_registry()
    found: dict[str, Provider] = {}
    geocoder = geocoder_provider(settings)
    found[geocoder.name] = geocoder
    for record_type in registry:
        if not getattr(record_type, "lookups", ()):
            continue
        for provider in providers_for(record_type, settings):
            if provider is not None:
                found.setdefault(provider.name, provider)
    return found


def get_provider(settings: Any, name: str, registry: Iterable[Any] | None = None) -> Provider:
    known = providers(settings, registry)
    if name not in known:
        raise UnknownProvider(f"no provider {name!r}; the providers are {', '.join(known)}")
    return known[name]


def host_of(provider: Provider) -> str | None:
    """The host (and port, when given) of the provider's base URL: no scheme, credentials or path."""
    if not provider.base_url:
        return None
    url = httpx.URL(provider.base_url)
    return f"{url.host}:{url.port}" if url.port else url.host


def describe(client: redis.Redis, prefix: str, known: dict[str, Provider]) -> list[dict[str, Any]]:
    """Each provider with its counters and breaker (raises redis.RedisError if Redis does not answer)."""
    numbers = stats(client, prefix, known.values())
    out = []
    for name, provider in known.items():
        s = numbers[name]
        calls = {outcome: int(s["calls"].get(outcome, 0)) for outcome in CALL_OUTCOMES}
        hit, miss = int(s["cache"].get("hit", 0)), int(s["cache"].get("miss", 0))
        out.append(
            {
                "name": name,
                "enabled": provider.enabled,
                "host": host_of(provider),
                "rate": provider.rate,
                "ttl_seconds": provider.ttl_seconds,
                "calls": {**calls, "total": sum(calls.values())},
                "cache": {"hit": hit, "miss": miss, "hit_ratio": round(hit / (hit + miss), 4) if hit + miss else None},
                "errors": dict(sorted(s["errors"].items())),
                "rate_limited": s["rate_limited"],
                "breaker": {**s["breaker"], "open_for_seconds": float(s["breaker"]["open_for_seconds"])},
            }
        )
    return out
