"""What a running process needs: settings, the engine, the registry, the Celery app and, in a
web process, the outbox relay. :func:`etl_app.runtime.build.build_runtime` makes one (the type
lives apart from the code that builds it, so that tasks can name it without importing the
Celery app); nothing connects until used. Domain functions take the parts they use (an engine,
a :class:`~etl_app.ingest.send.Publisher`), never the whole runtime."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
import sqlalchemy as sa
from celery import Celery
from redis.backoff import NoBackoff
from redis.retry import Retry

from etl_app.config import Settings
from etl_app.ingest.backlog import BacklogReader, Bounds
from etl_app.ingest.send import Publisher
from etl_app.jobs.context import JobTools
from etl_app.pipeline.queue_head import HeadRecorder
from etl_app.pipeline.stash import Stash
from etl_app.record_types import Registry

if TYPE_CHECKING:
    from etl_app.ingest.relay import Relay

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
    _queue_heads: HeadRecorder | None = field(default=None, repr=False)
    _backlog: BacklogReader | None = field(default=None, repr=False)

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
    def queue_heads(self) -> HeadRecorder:
        """What a worker's consumer has taken from each queue, in time, written to :attr:`cache`
        (RabbitMQ only: :mod:`etl_app.pipeline.queue_head`)."""
        if self._queue_heads is None:
            self._queue_heads = HeadRecorder(lambda: self.cache, self.settings.broker_key_prefix)
        return self._queue_heads

    @property
    def backlog(self) -> BacklogReader:
        """This process's reading of the backlog of unsettled records, taken again at most every
        second (:mod:`etl_app.ingest.backlog`): what the submit endpoints, /ready, /metrics and the
        Overview page read."""
        if self._backlog is None:
            self._backlog = BacklogReader(
                self.engine, lambda: self.cache, self.settings.broker_key_prefix, Bounds.of(self.settings)
            )
        return self._backlog

    @property
    def stash(self) -> Stash:
        """Where chunk values wait between stages (the cache Redis, the broker's key prefix)."""
        return Stash(self.cache, self.settings.broker_key_prefix)

    @property
    def publisher(self) -> Publisher:
        """What sending committed records takes (:func:`etl_app.ingest.send.send_after_commit`)."""
        return Publisher(
            celery=self.celery,
            stash=self.stash,
            engine=self.engine,
            chunk_size=self.settings.chunk_size,
            timeout=self.settings.publish_timeout_seconds,
        )

    @property
    def job_tools(self) -> JobTools:
        """What the jobs that reach beyond the database take (:func:`etl_app.jobs.runner.run_job`)."""
        return JobTools(
            registry=self.registry, publisher=self.publisher, cache=self.cache, lookup_cache=self.lookup_cache
        )

    def reset_after_fork(self) -> None:
        """Drop inherited connections in a forked child (they belong to the parent)."""
        self.engine.dispose(close=False)
        self._cache = self._lookup_cache = None
        self._backlog = None


def _cache_client(url: str) -> redis.Redis:
    """A Redis whose every operation gives up within a second, without retrying (a server that is
    stopped or unreachable costs its caller one second at most, then counts as a miss)."""
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
