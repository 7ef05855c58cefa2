"""``lookup_chunk``: the distinct values of one chunk, each asked once (cache first), concurrently
up to the provider's bound, under the shared rate limit and circuit breaker.

Nothing here sleeps or retries: a value that could not be looked up now comes back ``failed``
with its kind, and the result's ``retry_after`` tells the caller (the enrich task) when a retry
makes sense; the caller decides whether its budget allows one (:meth:`LookupResult.should_retry`)
or persists the records with their lookup fields null.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import redis

from etl_app.lookups import metrics
from etl_app.lookups.breaker import NoBreaker, RedisBreaker
from etl_app.lookups.provider import NOT_FOUND, Provider
from etl_app.lookups.ratelimit import TokenLimiter

log = logging.getLogger(__name__)

FOUND, NOT_FOUND_STATUS, FAILED, SKIPPED, EMPTY = "found", "not_found", "failed", "skipped", "empty"

# Failure kinds. Retryable: worth asking again later. Breaker: counts as the provider failing.
TIMEOUT, CONNECT, RESET = "timeout", "connect", "reset"
RATE_LIMITED, SERVER_ERROR = "rate_limited", "server_error"
TOO_LARGE, MALFORMED, BAD_STATUS = "too_large", "malformed", "bad_status"
BREAKER_OPEN, NO_TOKEN = "breaker_open", "no_token"
DEFERRED = "deferred"  # not asked: the chunk's first call found the provider unreachable, slow or refusing
RETRYABLE = frozenset(
    {TIMEOUT, CONNECT, RESET, RATE_LIMITED, SERVER_ERROR, TOO_LARGE, MALFORMED, BREAKER_OPEN, NO_TOKEN, DEFERRED}
)
# A first call failing so says the provider, not the value, is the trouble: the rest of the chunk
# waits for the retry instead of each holding the worker for its own timeout.
_DEFERS_THE_REST = frozenset({TIMEOUT, CONNECT, RESET, RATE_LIMITED, SERVER_ERROR})
PROVIDER_FAILURES = frozenset({TIMEOUT, CONNECT, RESET, SERVER_ERROR, TOO_LARGE, MALFORMED, BAD_STATUS})

_NF_MARK = b'{"__not_found__":1}'


@dataclass(frozen=True)
class Outcome:
    """One distinct value's answer. ``status`` is also the record's ``lookup_status``."""

    status: str  # found, not_found, failed, skipped (provider off), empty (no value to look up)
    fields: Mapping[str, Any] | None = None  # the filled fields, when found
    error: str | None = None  # the failure's kind, when failed
    cached: bool = False
    retry_after: float | None = None  # when failed and worth retrying: seconds to wait


@dataclass
class LookupResult:
    provider: Provider
    outcomes: dict[str | None, Outcome]  # by normalised value (None: no value)
    retry_after: float | None = None  # the longest wait any retryable failure asks; None: nothing to retry
    counts: Counter[str] = field(
        default_factory=Counter
    )  # calls:<outcome>, cache:hit|miss, errors:<kind>, rate_limited

    def outcome(self, value: Any) -> Outcome:
        """The outcome of a raw value (as passed in: it is normalised here)."""
        return self.outcomes[self.provider.normalise(value)]

    def fields_for(self, value: Any) -> dict[str, Any]:
        """Every field the provider fills: its value when found, None otherwise."""
        out = self.provider.empty_fields()
        found = self.outcome(value).fields
        if found:
            out.update({k: found.get(k) for k in self.provider.fills})
        return out

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == FAILED)

    @property
    def only_throttled(self) -> bool:
        """Every failure is ours (no rate-limit token, a 429): the provider is healthy; a caller
        may choose not to count such a retry against its budget. Values deferred behind the chunk's
        first call take after it."""
        kinds = {o.error for o in self.outcomes.values() if o.status == FAILED} - {DEFERRED}
        return bool(kinds) and kinds <= {NO_TOKEN, RATE_LIMITED}

    def should_retry(self, attempt: int) -> bool:
        """Worth a ``retry(countdown=ceil(retry_after))`` at retry number ``attempt`` (0 first)."""
        return self.retry_after is not None and attempt < self.provider.max_retries


def cache_key(prefix: str, provider: Provider, normalised: str) -> str:
    digest = hashlib.sha256(normalised.encode()).hexdigest()[:40]
    return f"{prefix}etl:lookup:cache:{provider.name}:{provider.cache_version}:{digest}"


def lookup_chunk(
    provider: Provider,
    values: Iterable[Any],
    *,
    redis: redis.Redis,
    http_client: httpx.Client,
    key_prefix: str = "",
    attempt: int = 0,
    cache: redis.Redis | None = None,
) -> LookupResult:
    """Look the distinct values up: cache (one MGET), then one call per miss. Never raises for a
    provider's or Redis's failure. ``attempt`` (the caller's retry number) sets the backoff.
    ``redis`` holds the shared rate limit, breaker and metrics; ``cache`` the cached answers
    (default: ``redis``)."""
    distinct = list(dict.fromkeys(provider.normalise(v) for v in values))
    result = LookupResult(provider, {})
    if None in distinct:
        result.outcomes[None] = Outcome(EMPTY)
        distinct.remove(None)
    if not provider.enabled:
        result.outcomes.update({v: Outcome(SKIPPED) for v in distinct})
        return result
    if not distinct:
        return result

    keys = {v: cache_key(key_prefix, provider, v) for v in distinct}
    own_cache = cache is not None and cache is not redis
    cache = redis if cache is None else cache
    cached_raw = _cache_get(cache, provider, list(keys.values()))
    # A cache that is down is found out once a chunk: every value a miss, nothing written back.
    # The shared Redis down (the same one, or a PING to it when the cache has its own): the chunk
    # goes on without it too (the breaker unconsulted, the rate counted in this process, nothing
    # counted).
    cache_up = cached_raw is not None
    shared = _reachable(redis, provider) if own_cache else cache_up
    misses: list[str] = []
    for value, raw in zip(distinct, cached_raw or [None] * len(distinct), strict=True):
        cached = _decode_cached(raw)
        if cached is None:
            misses.append(value)
        elif cached is NOT_FOUND:
            result.outcomes[value] = Outcome(NOT_FOUND_STATUS, cached=True)
        else:
            result.outcomes[value] = Outcome(FOUND, fields=cached, cached=True)
    result.counts["cache:hit"] += len(distinct) - len(misses)
    result.counts["cache:miss"] += len(misses)

    if misses:
        caller = _Caller(provider, redis, key_prefix, http_client, attempt, shared=shared)
        # The first miss goes alone: when the breaker is half-open it is the probe, and the
        # others follow only once it has answered.
        first, first_counts = caller.ask(misses[0])
        answers = [(first, first_counts)]
        if first.error in (BREAKER_OPEN, NO_TOKEN):  # the rest would be refused alike: not asked
            answers += [(first, Counter({f"errors:{first.error}": 1})) for _ in misses[1:]]
        elif caller.opened:  # it failed and opened the breaker (a failed probe): the rest wait
            refused = Outcome(FAILED, error=BREAKER_OPEN, retry_after=provider.breaker_cooldown_seconds)
            answers += [(refused, Counter({f"errors:{BREAKER_OPEN}": 1})) for _ in misses[1:]]
        elif first.error in _DEFERS_THE_REST:  # the provider is down, slow or refusing: ask once a round
            deferred = Outcome(FAILED, error=DEFERRED, retry_after=first.retry_after)
            answers += [(deferred, Counter({f"errors:{DEFERRED}": 1})) for _ in misses[1:]]
        elif len(misses) > 1:
            with ThreadPoolExecutor(max_workers=min(provider.concurrency, len(misses) - 1)) as pool:
                answers += list(pool.map(caller.ask, misses[1:]))
        to_cache: dict[str, bytes] = {}
        ttls: dict[str, int] = {}
        for value, (outcome, counts) in zip(misses, answers, strict=True):
            result.outcomes[value] = outcome
            result.counts.update(counts)
            if outcome.status == FOUND:
                to_cache[keys[value]] = orjson.dumps(dict(outcome.fields or {}))
                ttls[keys[value]] = provider.ttl_seconds
            elif outcome.status == NOT_FOUND_STATUS:
                to_cache[keys[value]] = _NF_MARK
                ttls[keys[value]] = provider.not_found_ttl_seconds
        if cache_up:
            _cache_set(cache, provider, to_cache, ttls)

    waits = [o.retry_after for o in result.outcomes.values() if o.retry_after is not None]
    result.retry_after = max(waits) if waits else None
    if shared:
        metrics.record(redis, key_prefix, provider.name, result.counts)
    return result


def _cache_get(client: redis.Redis, provider: Provider, keys: list[str]) -> list[bytes | None] | None:
    """The cached answers; None when Redis cannot be reached."""
    try:
        return list(client.mget(keys))
    except redis.RedisError as exc:
        log.warning("lookup cache of %s unavailable, all misses: %s", provider.name, exc)
        return None


def _reachable(client: redis.Redis, provider: Provider) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError as exc:
        log.warning("shared Redis of the lookups of %s unavailable: %s", provider.name, exc)
        return False


def _cache_set(client: redis.Redis, provider: Provider, entries: dict[str, bytes], ttls: dict[str, int]) -> None:
    if not entries:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for key, raw in entries.items():
            pipe.set(key, raw, ex=max(1, int(ttls[key])))
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("lookup cache of %s not written: %s", provider.name, exc)


def _decode_cached(raw: bytes | str | None) -> Any:
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.encode()
    if raw == _NF_MARK:
        return NOT_FOUND
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return decoded if isinstance(decoded, dict) else None


class _Failure(Exception):
    def __init__(self, kind: str, retry_after: float | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.retry_after = retry_after


class _Caller:
    def __init__(
        self,
        provider: Provider,
        client: redis.Redis,
        prefix: str,
        http_client: httpx.Client,
        attempt: int,
        *,
        shared: bool,
    ) -> None:
        self.provider = provider
        self.http = http_client
        self.attempt = attempt
        self.breaker: RedisBreaker | NoBreaker = (
            metrics.breaker_for(client, prefix, provider) if shared else NoBreaker()
        )
        self.limiter = TokenLimiter(client, prefix, provider.name, provider.rate, shared=shared)
        self.opened = False  # a call of this chunk opened the breaker

    def ask(self, value: str) -> tuple[Outcome, Counter[str]]:
        counts: Counter[str] = Counter()
        decision = self.breaker.allow()
        if not decision.allowed:
            counts[f"errors:{BREAKER_OPEN}"] += 1
            return Outcome(FAILED, error=BREAKER_OPEN, retry_after=max(decision.wait_seconds, 0.001)), counts
        granted, wait = self.limiter.take()
        if not granted:
            if decision.state == "probe":
                self.breaker.release_probe()
            counts[f"errors:{NO_TOKEN}"] += 1
            return Outcome(FAILED, error=NO_TOKEN, retry_after=wait), counts

        try:
            parsed = self._call(value)
        except _Failure as failure:
            counts[f"calls:{FAILED}"] += 1
            counts[f"errors:{failure.kind}"] += 1
            if failure.kind == RATE_LIMITED:
                counts["rate_limited"] += 1
            if failure.kind in PROVIDER_FAILURES:
                if self.breaker.failure() == "opened":
                    self.opened = True
                    log.warning("lookup provider %s: circuit breaker opened", self.provider.name)
            elif decision.state == "probe":
                self.breaker.release_probe()
            retry_after = None
            if failure.kind in RETRYABLE:
                retry_after = (
                    failure.retry_after if failure.retry_after is not None else self.provider.backoff(self.attempt)
                )
            return Outcome(FAILED, error=failure.kind, retry_after=retry_after), counts
        if self.breaker.success() == "closed" and decision.state == "probe":
            log.info("lookup provider %s: circuit breaker closed", self.provider.name)
        if parsed is NOT_FOUND:
            counts[f"calls:{NOT_FOUND_STATUS}"] += 1
            return Outcome(NOT_FOUND_STATUS), counts
        counts[f"calls:{FOUND}"] += 1
        return Outcome(FOUND, fields={k: parsed.get(k) for k in self.provider.fills}), counts

    def _call(self, value: str) -> Any:
        provider = self.provider
        try:
            url = provider.request_url(value)
        except ValueError:
            raise _Failure(BAD_STATUS) from None
        started = time.monotonic()
        try:
            with self.http.stream(
                "GET", url, headers=dict(provider.headers), timeout=provider.timeout(), follow_redirects=False
            ) as response:
                status = response.status_code
                if status == 429:
                    raise _Failure(RATE_LIMITED, _retry_after(response.headers.get("Retry-After"), provider))
                if status >= 500:
                    raise _Failure(SERVER_ERROR)
                if status != 200:
                    raise _Failure(BAD_STATUS)
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > provider.max_response_bytes:
                    raise _Failure(TOO_LARGE)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > provider.max_response_bytes:
                        raise _Failure(TOO_LARGE)
                    if time.monotonic() - started > provider.total_timeout:
                        raise _Failure(TIMEOUT)
        except httpx.TimeoutException:
            raise _Failure(TIMEOUT) from None
        except httpx.ConnectError:
            raise _Failure(CONNECT) from None
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.DecodingError):
            raise _Failure(RESET) from None
        except httpx.HTTPError:
            raise _Failure(CONNECT) from None
        try:
            answer = orjson.loads(bytes(body))
            parsed = provider.parse(answer)
        except Exception:  # noqa: BLE001 - any answer parse cannot read is a malformed answer
            raise _Failure(MALFORMED) from None
        if parsed is not NOT_FOUND and not isinstance(parsed, Mapping):
            raise _Failure(MALFORMED)
        return parsed


def _retry_after(header: str | None, provider: Provider) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), capped by the provider's backoff cap."""
    if not header:
        return None
    header = header.strip()
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.001), provider.backoff_max_seconds)
