"""What a running process needs: settings, the engine, the registry, the Celery app and, in a
web process, the outbox relay. :func:`build_runtime` makes one; nothing connects until used."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import redis
import sqlalchemy as sa
from celery import Celery
from redis.backoff import NoBackoff
from redis.retry import Retry

from etl_app.config import Settings
from etl_app.db import make_engine
from etl_app.ingest.relay import Relay
from etl_app.pipeline.stash import Stash
from etl_app.record_types import Registry, get_registry
from etl_app.runtime.celery_app import make_celery

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """``relay``: the web process's outbox relay (None in the CLI, whose unpublished records the
    sweeper sends); the worker's runtime has one too but never wakes it."""

    settings: Settings
    engine: sa.Engine
    registry: Registry
    celery: Celery
    relay: Relay | None = None
    _cache: Any = field(default=None, repr=False)
    _lookup_cache: Any = field(default=None, repr=False)

    @property
    def cache(self) -> redis.Redis:
        """The Redis used as cache (delivery counters); errors from it are treated as misses.
        Keys carry ETL_BROKER_KEY_PREFIX, like the broker's."""
        if self._cache is None:
            self._cache = _cache_client(self.settings.redis_url or self.settings.broker_url)
        return self._cache

    @property
    def lookup_cache(self) -> redis.Redis:
        """The Redis of the external lookups' cache-aside: ETL_LOOKUP_CACHE_URL, else :attr:`cache`.
        Only the cached answers live there; the rate limit, breaker and metrics stay on
        :attr:`cache`, which every worker shares. Down, it is a miss (one failed read a chunk)."""
        if not self.settings.lookup_cache_url:
            return self.cache
        if self._lookup_cache is None:
            self._lookup_cache = _cache_client(self.settings.lookup_cache_url)
        return self._lookup_cache

    @property
    def stash(self) -> Stash:
        """Where chunk values wait between stages (the cache Redis, the broker's key prefix)."""
        return Stash(self.cache, self.settings.broker_key_prefix)

    def reset_after_fork(self) -> None:
        """Drop inherited connections in a forked child (they belong to the parent)."""
        self.engine.dispose(close=False)
        self._cache = self._lookup_cache = None


def _cache_client(url: str) -> redis.Redis:
    """A Redis whose every operation gives up within a second, without retrying (a server that is
    stopped or unreachable costs its caller one second at most, then counts as a miss)."""
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


def build_runtime(
    settings: Settings,
    *,
    application_name: str = "etl_app",
    pool_size: int | None = None,
    max_overflow: int = 5,
    with_relay: bool = True,
) -> Runtime:
    """The runtime of a process: the service's (``create_app``) or a command's (one connection)."""
    engine = make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size if pool_size is None else pool_size,
        max_overflow=max_overflow,
        application_name=application_name,
    )
    celery = make_celery("etl_app", settings.broker_url, settings.broker_key_prefix)
    runtime = Runtime(settings=settings, engine=engine, registry=get_registry(), celery=celery)
    if with_relay:
        runtime.relay = Relay(runtime, window=settings.relay_window_ms / 1000)
    celery.etl = runtime
    return runtime
