"""External lookups: enrichers a record type declares (a :class:`Provider`: where to ask, the
fields it reads and fills), asked once per distinct value of a chunk, through a Redis cache, a
rate limit and a circuit breaker that every worker shares. Independent of Celery: the caller
decides whether to retry (:meth:`LookupResult.should_retry`, ``retry_after``)."""

from etl_app.lookups.core import (
    EMPTY,
    FAILED,
    FOUND,
    NOT_FOUND_STATUS,
    RETRYABLE,
    SKIPPED,
    LookupResult,
    Outcome,
    cache_key,
    lookup_chunk,
)
from etl_app.lookups.metrics import families, reset_breaker, stats
from etl_app.lookups.provider import NOT_FOUND, Provider, normalise_text

__all__ = [
    "EMPTY",
    "FAILED",
    "FOUND",
    "NOT_FOUND",
    "NOT_FOUND_STATUS",
    "RETRYABLE",
    "SKIPPED",
    "LookupResult",
    "Outcome",
    "Provider",
    "cache_key",
    "families",
    "lookup_chunk",
    "normalise_text",
    "reset_breaker",
    "stats",
]
