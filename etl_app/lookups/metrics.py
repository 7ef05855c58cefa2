"""Lookup metrics per provider, in Redis hashes that every process adds to (as
:mod:`etl_app.runtime.stage_metrics`), plus each breaker's state read at scrape time."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily

from etl_app.lookups.breaker import CLOSED, HALF_OPEN, OPEN, RedisBreaker
from etl_app.lookups.provider import Provider
from etl_app.runtime import stage_metrics

log = logging.getLogger(__name__)

CALLS = stage_metrics.RedisCounter(
    "etl_lookup_calls",
    "HTTP calls made to a lookup provider, by outcome (found, not_found, failed)",
    ["provider", "outcome"],
)
CACHE = stage_metrics.RedisCounter("etl_lookup_cache", "Lookup cache hits and misses", ["provider", "result"])
ERRORS = stage_metrics.RedisCounter(
    "etl_lookup_errors",
    "Lookups that failed, by kind (timeout, connect, reset, rate_limited, server_error, too_large, malformed, "
    "bad_status, breaker_open, no_token)",
    ["provider", "kind"],
)
RATE_LIMITED = stage_metrics.RedisCounter("etl_lookup_rate_limited", "429 answers from a provider", ["provider"])
LOOKUP_COUNTERS = (CALLS, CACHE, ERRORS, RATE_LIMITED)

BREAKER_STATES = (CLOSED, HALF_OPEN, OPEN)


def record(client: redis.Redis, prefix: str, provider: str, counts: Counter[str]) -> None:
    """Add one chunk's counts (keys as in :class:`LookupResult.counts`); a Redis error loses them."""
    try:
        pipe = client.pipeline(transaction=True)
        for key, n in counts.items():
            if not n:
                continue
            kind, _, label = key.partition(":")
            if kind == "calls":
                CALLS.inc(pipe, prefix, [provider, label], n)
            elif kind == "cache":
                CACHE.inc(pipe, prefix, [provider, label], n)
            elif kind == "errors":
                ERRORS.inc(pipe, prefix, [provider, label], n)
            elif kind == "rate_limited":
                RATE_LIMITED.inc(pipe, prefix, [provider], n)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("lookup metrics of %s not recorded: %s", provider, exc)


def breaker_for(client: redis.Redis, prefix: str, provider: Provider) -> RedisBreaker:
    return RedisBreaker(
        client,
        prefix,
        provider.name,
        failures=provider.breaker_failures,
        cooldown_seconds=provider.breaker_cooldown_seconds,
        probe_lease_seconds=provider.total_timeout + provider.connect_timeout,
    )


def families(client: redis.Redis, prefix: str, providers: Iterable[Provider]) -> list[Any]:
    """Prometheus families for ``GET /metrics``: the counters, and ``etl_lookup_breaker_state``
    (1 on the provider's current state, 0 on the others)."""
    out = stage_metrics.read(client, prefix, LOOKUP_COUNTERS)
    gauge = GaugeMetricFamily(
        "etl_lookup_breaker_state", "A lookup provider's circuit breaker state", labels=["provider", "state"]
    )
    for provider in providers:
        state = breaker_for(client, prefix, provider).state().state
        for name in BREAKER_STATES:
            gauge.add_metric([provider.name, name], 1.0 if name == state else 0.0)
    out.append(gauge)
    return out


def stats(client: redis.Redis, prefix: str, providers: Iterable[Provider]) -> dict[str, dict[str, Any]]:
    """Per provider: ``enabled``, ``calls`` {outcome: n}, ``cache`` {hit, miss}, ``errors`` {kind: n},
    ``rate_limited``, ``breaker`` {state, open_for_seconds, failures, opened_count}."""
    providers = list(providers)
    pipe = client.pipeline(transaction=False)
    for metric in LOOKUP_COUNTERS:
        pipe.hgetall(stage_metrics.metrics_key(prefix, metric.name))
    hashes = dict(zip((m.name for m in LOOKUP_COUNTERS), pipe.execute(), strict=True))

    def by_label(metric: stage_metrics.RedisCounter, name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for field, value in hashes[metric.name].items():
            labels = field.decode().split("\t")
            if labels[0] == name and len(labels) == 2:
                out[labels[1]] = int(value)
        return out

    result: dict[str, dict[str, Any]] = {}
    for provider in providers:
        breaker = breaker_for(client, prefix, provider).state()
        rate_limited = hashes[RATE_LIMITED.name].get(provider.name.encode(), 0)
        result[provider.name] = {
            "enabled": provider.enabled,
            "calls": by_label(CALLS, provider.name),
            "cache": {"hit": 0, "miss": 0, **by_label(CACHE, provider.name)},
            "errors": by_label(ERRORS, provider.name),
            "rate_limited": int(rate_limited),
            "breaker": {
                "state": breaker.state,
                "open_for_seconds": breaker.open_for_seconds,
                "failures": breaker.failures,
                "opened_count": breaker.opened_count,
            },
        }
    return result


def reset_breaker(client: redis.Redis, prefix: str, provider: Provider) -> None:
    """Close a provider's breaker now (after the provider is known to be back)."""
    breaker_for(client, prefix, provider).reset()
