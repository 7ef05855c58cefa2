"""The app factory: the one wiring point of a web process (``gunicorn wsgi:app``) and of a
worker (``celery -A wsgi:celery``)."""

from __future__ import annotations

from types import FunctionType
from typing import Any

from flask import Flask

SYNC_REMEMBERED = 10_000  # functions App.ensure_sync remembers at most (hooks and views: a few hundred)


class App(Flask):
    """Flask, remembering for each plain function whether it is a coroutine function: Flask asks
    (``ensure_sync``) for every hook and view of every request, a dozen times an API request,
    and the answer never changes. Other callables are asked each time, as Flask does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synced: dict[FunctionType, Any] = {}

    def ensure_sync(self, func: Any) -> Any:
        if type(func) is not FunctionType:
            return super().ensure_sync(func)
        synced = self._synced.get(func)
        if synced is None:
            synced = super().ensure_sync(func)
            if len(self._synced) < SYNC_REMEMBERED:
                self._synced[func] = synced
        return synced


def create_app(config: dict[str, Any] | None = None):
    """The only wiring point: settings, engine, registry, Celery app and the API blueprints.

    ``config`` overrides settings by field name (see :class:`etl_app.config.Settings`) and
    Flask config keys (upper case). Nothing connects here.
    """
    from etl_app import api, logs, ui
    from etl_app.api import requestlog
    from etl_app.config import Settings
    from etl_app.lineage import openlineage
    from etl_app.runtime.build import build_runtime
    from etl_app.web import authfail

    logs.configure()
    config = dict(config or {})
    settings = Settings.from_env(**{k: v for k, v in config.items() if k.islower()})
    logs.add_secrets(settings.database_url, settings.redis_url, settings.broker_url)
    logs.add_secrets(*logs.entry_secrets((*settings.api_keys, *settings.metrics_keys)))
    if not settings.database_url or not settings.broker_url:
        raise RuntimeError(
            "DATABASE_URL and REDIS_URL are not set: start the service with `etl-app run` "
            "(which starts an embedded PostgreSQL and Redis) or set them."
        )
    app = App("etl_app")
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    app.config.update({k: v for k, v in config.items() if k.isupper()})

    runtime = build_runtime(settings)
    openlineage.preload(settings)  # its imports take a second or so: at start, not at the first event
    app.extensions["celery"] = runtime.celery
    app.extensions["etl"] = runtime
    requestlog.init_app(app)  # first: every later hook logs with the request id
    api.init_app(app)  # with the rate limit, counted by key id between authentication and the rights
    ui.init_app(app)  # the operator's pages under /ui/
    authfail.trust_proxies(app, settings.proxy_hops)
    return app
