"""etl_app: a Celery task-graph ETL service with a thin Flask ingest API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def create_app(config: dict[str, Any] | None = None):
    """The only wiring point: settings, engine, registry, Celery app and the API blueprints.

    ``config`` overrides settings by field name (see :class:`etl_app.config.Settings`) and
    Flask config keys (upper case). Nothing connects here.
    """
    from flask import Flask

    from etl_app import api
    from etl_app.celery_app import make_celery
    from etl_app.config import Settings
    from etl_app.db import make_engine
    from etl_app.ingest.relay import Relay
    from etl_app.record_types import get_registry
    from etl_app.runtime import Runtime

    config = dict(config or {})
    settings = Settings.from_env(**{k: v for k, v in config.items() if k.islower()})
    if not settings.database_url or not settings.broker_url:
        raise RuntimeError(
            "DATABASE_URL and REDIS_URL are not set: start the service with `etl-app run` "
            "(which starts an embedded PostgreSQL and Redis) or set them."
        )
    app = Flask("etl_app")
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    app.config.update({k: v for k, v in config.items() if k.isupper()})

    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    celery = make_celery("etl_app", settings.broker_url, settings.broker_key_prefix)
    relay = Relay(engine, celery, chunk_size=settings.chunk_size, window=settings.relay_window_ms / 1000)
    runtime = Runtime(settings=settings, engine=engine, registry=get_registry(), celery=celery, relay=relay)
    celery.etl = runtime
    app.extensions["celery"] = celery
    app.extensions["etl"] = runtime
    api.init_app(app)
    return app
