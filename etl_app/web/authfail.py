"""Failed authentication slowed down per client address: a wrong API key on the API and a
wrong key on the pages' sign-in form count, in Redis, against the address they came from.

Each address has ETL_AUTH_FAILURES_PER_MINUTE failures (default 20; 0 turns the throttle off)
in a fixed window of a minute. Once they are used up, every request from that address that
needs a key is answered 429 with Retry-After (the seconds left in the window) before its key
is even looked at, right or wrong, so that guessing goes no faster than the budget whatever the
answers; other addresses, and keys that already authenticated, are not touched. A successful
authentication counts nothing.

The counters are ``<ETL_BROKER_KEY_PREFIX>authfail:<address>:<minute>`` on the cache Redis
(REDIS_URL), expiring with their window, so every web process counts together. If that Redis
cannot answer, authentication goes on unthrottled (logged), as the rate limit does.

A request reads its address's counter only when the web process that serves it has itself
seen a failed authentication from that address in the current window, so a client whose keys
are right costs no Redis round trip. A guesser's requests fail, so each process it reaches
starts checking after its first failure there: the budget is the limit plus at most one
unchecked attempt per web process and window. A process that has seen failures from more than
``TRACKED_ADDRESSES`` addresses in one window checks every request until the window ends.

The address is Flask's ``request.remote_addr``: the peer of the connection, as in the access
log, or, behind reverse proxies, the client address they forwarded when ETL_PROXY_HOPS says how
many of them to trust (:func:`trust_proxies`).
"""

from __future__ import annotations

import logging
import time

import redis
from flask import Flask, current_app, request

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
TRACKED_ADDRESSES = 100_000

# Addresses this process saw fail in the window ``_seen_window`` (see the module's docstring).
_seen: set[str] = set()
_seen_window = -1


class TooManyFailures(Exception):
    """This address used up its failed authentications of the window: wait ``retry_after`` s."""

    def __init__(self, retry_after: int, limit: int) -> None:
        super().__init__(
            f"too many failed authentications from this address ({limit} a minute); retry in {retry_after} s"
        )
        self.retry_after = retry_after


def _counter(address: str, window: int) -> str:
    settings = current_app.extensions["etl"].settings
    return f"{settings.broker_key_prefix}authfail:{address}:{window}"


def _now() -> tuple[int, int]:
    """The current window's number and the seconds left in it."""
    now = time.time()
    return int(now // WINDOW_SECONDS), WINDOW_SECONDS - int(now % WINDOW_SECONDS)


def _limit() -> int:
    return current_app.extensions["etl"].settings.auth_failures_per_minute


def client_address() -> str:
    return request.remote_addr or "unknown"


def refuse_if_throttled() -> None:
    """:class:`TooManyFailures` when this request's address has no failed authentication left."""
    if not _seen:  # no failure seen here in any window: nothing to check (the common case, first)
        return
    limit = _limit()
    if limit <= 0:
        return
    window, left = _now()
    address = client_address()
    if window != _seen_window or (address not in _seen and len(_seen) < TRACKED_ADDRESSES):
        return
    try:
        failures = current_app.extensions["etl"].cache.get(_counter(address, window))
    except redis.RedisError as exc:
        log.warning("failed authentications are not throttled: the cache Redis did not answer (%s)", exc)
        return
    if failures is not None and int(failures) >= limit:
        raise TooManyFailures(left, limit)


def failed() -> None:
    """Count a failed authentication of this request's address."""
    if _limit() <= 0:
        return
    window, _ = _now()
    address = client_address()
    _remember(address, window)
    name = _counter(address, window)
    try:
        with current_app.extensions["etl"].cache.pipeline(transaction=False) as pipe:
            pipe.incr(name)
            pipe.expire(name, WINDOW_SECONDS * 2)
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("a failed authentication was not counted: the cache Redis did not answer (%s)", exc)


def _remember(address: str, window: int) -> None:
    """Note that this process saw ``address`` fail in ``window`` (a new window forgets the old)."""
    global _seen_window
    if window != _seen_window:
        _seen.clear()
        _seen_window = window
    if len(_seen) < TRACKED_ADDRESSES:
        _seen.add(address)


def trust_proxies(app: Flask, hops: int) -> None:
    """Behind ``hops`` reverse proxies (ETL_PROXY_HOPS), take the client address from the
    X-Forwarded-For they add (werkzeug's ProxyFix, that many entries from the right); 0 trusts
    no header. Only the address: the scheme stays with gunicorn's ``--forwarded-allow-ips``."""
    if hops > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=0, x_host=0, x_port=0, x_prefix=0)
