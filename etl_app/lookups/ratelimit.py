"""One rate per provider, shared by every worker on every host: tokens are taken in Redis with
the `limits` library (already a dependency, through flask-limiter, and what ETL_RATE_LIMIT uses).

``MovingWindowRateLimiter.hit`` is one Lua script on a Redis list (atomic across processes) that
answers at once: a token or not, never a wait. A moving window rather than a fixed one: a fixed
window lets twice the rate through around a window's edge, which is what a provider's own limit
punishes. pyrate-limiter would do the same job, but its non-blocking mode is the opposite of its
default and it would be one more dependency for what `limits` already does.

When Redis is unreachable the tokens are counted in this process's memory meanwhile (the same
rate per process), as the API's own rate limits do: never unlimited, never an error.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

_fallback_lock = threading.Lock()
_fallback: dict[str, MovingWindowRateLimiter] = {}


def _memory_limiter(key: str) -> MovingWindowRateLimiter:
    with _fallback_lock:
        if key not in _fallback:
            _fallback[key] = MovingWindowRateLimiter(MemoryStorage())
        return _fallback[key]


class TokenLimiter:
    """``take()`` → ``(True, 0)`` or ``(False, seconds until a token frees up)``; never sleeps."""

    def __init__(
        self, client: redis.Redis, prefix: str, provider: str, rate: str | None, *, shared: bool = True
    ) -> None:
        self.items: list[RateLimitItem] = parse_many(rate) if rate else []
        self.provider = provider
        self.shared = shared  # False: Redis is known to be down, count in this process at once
        self.namespace = f"{prefix}etl:lookup:rate"
        self.limiter = MovingWindowRateLimiter(
            RedisStorage("redis://", connection_pool=client.connection_pool, key_prefix=self.namespace)
        )

    def take(self) -> tuple[bool, float]:
        if not self.items:
            return True, 0.0
        if not self.shared:
            return self._take(_memory_limiter(f"{self.namespace}:{self.provider}"))
        try:
            return self._take(self.limiter)
        except redis.RedisError as exc:
            log.warning("shared rate limit of %s unavailable, counted in this process: %s", self.provider, exc)
            return self._take(_memory_limiter(f"{self.namespace}:{self.provider}"))

    def _take(self, limiter: MovingWindowRateLimiter) -> tuple[bool, float]:
        # With several rates ("10/second;500/minute") a token taken from an earlier one is spent
        # even if a later one refuses: the refusal errs on the side of fewer calls.
        for item in self.items:
            if not limiter.hit(item, self.provider):
                reset_at = limiter.get_window_stats(item, self.provider).reset_time
                return False, max(0.001, reset_at - time.time())
        return True, 0.0

    def clear(self) -> None:
        for item in self.items:
            self.limiter.clear(item, self.provider)
