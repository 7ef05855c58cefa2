"""The external lookups of a record type (``RecordType.lookups``), asked in enrich.

Each declared lookup is a callable taking the process's ``Settings`` and returning a
:class:`~etl_app.lookups.Provider`; it is built once per process. For a chunk, every provider is
asked once through :func:`~etl_app.lookups.lookup_chunk` for the chunk's values (cache, rate limit
and breaker shared in Redis), then each record gets the fields the providers fill (null unless
found), ``lookup_status`` and ``looked_up_at``.

Nothing here retries or raises for a provider's failure: :func:`retry_plan` tells the enrich task
whether a Celery retry is worth it; when it is not, the records go on with their lookup fields
null and ``lookup_status`` ``failed``. A lookup never blocks the pipeline nor dead-letters a record.

The retry rule: a failure worth retrying (``retry_after`` set) is retried while the chunk's
counted retries are fewer than the provider's ``max_retries``. A retry of a chunk whose only
failures are throttling (no rate-limit token left, a 429: the provider is healthy, we asked too
fast) is not counted, up to :data:`MAX_THROTTLED_RETRIES` of them, so that a burst waits for its
turn instead of landing unlooked-up; beyond that they count like any other.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import redis

from etl_app.lookups import EMPTY, FAILED, FOUND, NOT_FOUND_STATUS, SKIPPED, LookupResult, Outcome, Provider
from etl_app.lookups import lookup_chunk as _lookup_chunk
from etl_app.pipeline.stash import Item
from etl_app.record_types import RecordType

log = logging.getLogger(__name__)

STATUS_FIELD, AT_FIELD = "lookup_status", "looked_up_at"
MAX_THROTTLED_RETRIES = 20
INTERNAL = "internal"  # a lookup that raised (a bug, a provider that cannot be built)

# With several providers, a record's lookup_status is the first of these any of them gives.
_STATUS_ORDER = (FAILED, NOT_FOUND_STATUS, FOUND, EMPTY, SKIPPED)
_ASKED = frozenset({FOUND, NOT_FOUND_STATUS, FAILED})

_providers: dict[str, tuple[Any, list[Provider | None]]] = {}  # by type: (the settings, its providers)
_http: tuple[int, httpx.Client] | None = None


def providers_for(record_type: RecordType, settings: Any) -> list[Provider | None]:
    """The record type's providers (each declared as a callable of the settings, or as a
    :class:`Provider`), built once per process and settings (None: it could not be built, logged;
    its values come back ``failed``)."""
    cached = _providers.get(record_type.name)
    if cached is None or cached[0] is not settings:
        built: list[Provider | None] = []
        for declare in record_type.lookups:
            try:
                built.append(declare if isinstance(declare, Provider) else declare(settings))
            except Exception:  # a broken declaration must not stop the pipeline
                log.exception("%s: a lookup could not be built; its fields stay null", record_type.name)
                built.append(None)
        cached = _providers[record_type.name] = (settings, built)
    return cached[1]


def http_client() -> httpx.Client:
    """This process's HTTP client for lookups, created on first use (after the worker forked)."""
    global _http
    if _http is None or _http[0] != os.getpid():
        _http = (os.getpid(), httpx.Client(follow_redirects=False))
    return _http[1]


def look_up(
    providers: Sequence[Provider | None],
    items: Sequence[Item],
    *,
    redis: redis.Redis,
    http: httpx.Client,
    key_prefix: str,
    attempt: int,
    cache: redis.Redis | None = None,
) -> list[LookupResult | None]:
    """One :func:`lookup_chunk` per provider over the items' values; None for a provider that
    is missing or whose lookup raised (logged). ``cache``: the Redis of the cached answers
    (``Runtime.lookup_cache``; default ``redis``, which holds the rate limit and breaker)."""
    results: list[LookupResult | None] = []
    for provider in providers:
        if provider is None:
            results.append(None)
            continue
        try:
            values = [provider.value_of(item["data"]) for item in items]
            results.append(
                _lookup_chunk(
                    provider, values, redis=redis, cache=cache, http_client=http, key_prefix=key_prefix, attempt=attempt
                )
            )
        except Exception:  # lookup_chunk never raises for a provider; a bug must not block
            log.exception("lookup %s raised; its fields stay null", provider.name)
            results.append(None)
    return results


@dataclass(frozen=True)
class RetryPlan:
    countdown: int  # whole seconds, at least 1
    throttled: int  # the chunk's uncounted (throttled) retries after this one


def retry_plan(results: Sequence[LookupResult | None], attempt: int, throttled: int) -> RetryPlan | None:
    """Whether the chunk should be retried, and when (see the module's retry rule). ``attempt``:
    the chunk's counted retries so far; ``throttled``: its uncounted ones."""
    pending = [r for r in results if r is not None and r.retry_after is not None]
    if not pending:
        return None
    countdown = max(1, math.ceil(max(r.retry_after for r in pending if r.retry_after is not None)))
    if all(r.only_throttled for r in pending) and throttled < MAX_THROTTLED_RETRIES:
        return RetryPlan(countdown, throttled + 1)
    if any(r.should_retry(attempt) for r in pending):
        return RetryPlan(countdown, throttled)
    return None


def fill(
    providers: Sequence[Provider | None],
    results: Sequence[LookupResult | None],
    items: Sequence[Item],
    now: datetime,
) -> list[Item]:
    """The items with every provider's fields (null unless found), ``lookup_status`` and
    ``looked_up_at`` (``now`` when a provider was asked or failed; null when all skipped/empty)."""
    out: list[Item] = []
    for item in items:
        data = dict(item["data"])
        statuses: set[str] = set()
        for provider, result in zip(providers, results, strict=True):
            if provider is None or result is None:
                statuses.add(FAILED)
                if provider is not None:
                    data.update(provider.empty_fields())
                continue
            value = provider.value_of(item["data"])
            outcome = _outcome(result, value)
            statuses.add(outcome.status)
            data.update(provider.empty_fields())
            if outcome.status == FOUND:
                data.update(result.fields_for(value))
        status = next((s for s in _STATUS_ORDER if s in statuses), None)
        data[STATUS_FIELD] = status
        data[AT_FIELD] = now if status in _ASKED else None
        out.append({**item, "data": data})
    return out


def _outcome(result: LookupResult, value: Any) -> Outcome:
    try:
        return result.outcome(value)
    except Exception:  # noqa: BLE001 - a value normalise cannot read again
        return Outcome(FAILED, error=INTERNAL)
