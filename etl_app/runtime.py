"""What a running process needs: settings, the engine, the registry and the Celery app."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import redis
import sqlalchemy as sa
from celery import Celery

from etl_app.config import Settings
from etl_app.ingest.relay import Relay
from etl_app.pipeline.stash import Stash
from etl_app.record_types import Registry

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: sa.Engine
    registry: Registry
    celery: Celery
    relay: Relay | None = None
    _cache: Any = field(default=None, repr=False)

    @property
    def cache(self) -> redis.Redis:
        """The Redis used as cache (delivery counters); errors from it are treated as misses.
        Keys carry ETL_BROKER_KEY_PREFIX, like the broker's."""
        if self._cache is None:
            self._cache = redis.Redis.from_url(
                self.settings.redis_url or self.settings.broker_url, socket_timeout=1, socket_connect_timeout=1
            )
        return self._cache

    @property
    def stash(self) -> Stash:
        """Where chunk values wait between stages (the cache Redis, the broker's key prefix)."""
        return Stash(self.cache, self.settings.broker_key_prefix)

    def reset_after_fork(self) -> None:
        """Drop inherited connections in a forked child (they belong to the parent)."""
        self.engine.dispose(close=False)
        self._cache = None
