"""A circuit breaker per provider, shared by every worker through one Redis hash.

Why not pybreaker's ``CircuitRedisStorage`` (1.4): ``CircuitBreaker.call`` holds a process-wide
``RLock`` for the whole guarded call, so the concurrent calls of a chunk would run one at a time;
once the cool-down is over every worker that asks moves the breaker to half-open and calls
through at once (there is no single probe); the opening time is kept in whole seconds (no short
cool-downs); each state change is several round trips read and written apart, so two workers
can interleave them; and its Redis errors are logged with a traceback on every call. purgatory
is asyncio-only. What is needed is three small Lua scripts, each one atomic step on the hash,
timed by the Redis server's clock (every host sees the same cool-down):

* ``allow``: closed → call; open within the cool-down → refused with the seconds left; open past
  it → this caller (one, across all workers) takes the probe lease and calls, the breaker is
  half-open; anyone else meanwhile is refused until the lease ends.
* ``success``: a success in half-open closes the breaker; in closed it clears the failure count.
* ``failure``: counts consecutive failures in closed and opens at the threshold; a failed probe
  reopens for another cool-down.

A Redis error never blocks a call: the breaker lets it through (and forgets its outcome).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

_ALLOW = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then return {1, 0, 'closed'} end
local ready = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0') + tonumber(ARGV[1])
if now < ready then return {0, ready - now, 'open'} end
local lease = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
if now < lease then return {0, lease - now, 'half_open'} end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[2]))
return {1, 0, 'probe'}
"""
)

_SUCCESS = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'probe_until', 0)
  return 'closed'
end
if state == 'closed' and tonumber(redis.call('HGET', KEYS[1], 'failures') or '0') > 0 then
  redis.call('HSET', KEYS[1], 'failures', 0)
end
return state or 'closed'
"""

_FAILURE = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' then return 'open' end
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'probe_until', 0, 'failures', 0)
  redis.call('HINCRBY', KEYS[1], 'opened_count', 1)
  return 'opened'
end
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if n >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'probe_until', 0, 'failures', 0)
  redis.call('HINCRBY', KEYS[1], 'opened_count', 1)
  return 'opened'
end
return 'closed'
"""
)

_STATE = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then
  return {'closed', 0, tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')}
end
local ready = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0') + tonumber(ARGV[1])
if state == 'open' and now < ready then return {'open', ready - now, 0} end
return {'half_open', 0, 0}
"""
)

_RELEASE = """
if redis.call('HGET', KEYS[1], 'state') == 'half_open' then redis.call('HSET', KEYS[1], 'probe_until', 0) end
return 1
"""


def breaker_key(prefix: str, provider: str) -> str:
    return f"{prefix}etl:lookup:breaker:{provider}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    wait_seconds: float  # when refused: until the cool-down (or the probe's lease) ends
    state: str  # closed, probe (this call is the half-open probe), open, half_open (another probes)


@dataclass(frozen=True)
class BreakerState:
    state: str  # closed, open, half_open
    open_for_seconds: float  # cool-down left when open
    failures: int  # consecutive failures counted while closed
    opened_count: int  # times it has opened


class RedisBreaker:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        provider: str,
        *,
        failures: int,
        cooldown_seconds: float,
        probe_lease_seconds: float,
    ) -> None:
        self.client = client
        self.key = breaker_key(prefix, provider)
        self.provider = provider
        self.failures = failures
        self.cooldown_ms = int(cooldown_seconds * 1000)
        self.probe_ms = max(1, int(probe_lease_seconds * 1000))

    def _run(self, script: str, *args: int) -> object:
        return self.client.eval(script, 1, self.key, *args)

    def allow(self) -> Decision:
        try:
            allowed, wait_ms, state = self._run(_ALLOW, self.cooldown_ms, self.probe_ms)  # type: ignore[misc]
        except redis.RedisError as exc:
            log.warning("breaker of %s unavailable, calls go through: %s", self.provider, exc)
            return Decision(True, 0.0, CLOSED)
        return Decision(bool(allowed), int(wait_ms) / 1000, _text(state))

    def success(self) -> str | None:
        """The state after it; ``"closed"`` also when a probe has just closed it."""
        try:
            return _text(self._run(_SUCCESS))
        except redis.RedisError:
            return None

    def failure(self) -> str | None:
        """``"opened"`` when this failure opened it (or reopened it after a failed probe)."""
        try:
            return _text(self._run(_FAILURE, self.failures))
        except redis.RedisError:
            return None

    def release_probe(self) -> None:
        """Give the probe lease back unused (no rate-limit token for it)."""
        try:
            self._run(_RELEASE)
        except redis.RedisError:
            pass

    def state(self) -> BreakerState:
        pipe = self.client.pipeline(transaction=False)
        pipe.eval(_STATE, 1, self.key, self.cooldown_ms)
        pipe.hget(self.key, "opened_count")
        (state, wait_ms, failures), opened = pipe.execute()
        return BreakerState(_text(state), int(wait_ms) / 1000, int(failures), int(opened or 0))

    def reset(self) -> None:
        """Closed, failures forgotten (an operator's decision; the opened count is kept)."""
        self.client.hset(self.key, mapping={"state": CLOSED, "failures": 0, "probe_until": 0, "opened_at": 0})


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NoBreaker:
    """Stands in while Redis is unreachable: every call goes through, nothing is remembered."""

    def allow(self) -> Decision:
        return Decision(True, 0.0, CLOSED)

    def success(self) -> str | None:
        return None

    def failure(self) -> str | None:
        return None

    def release_probe(self) -> None:
        pass
