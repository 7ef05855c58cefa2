"""The operator's pages under ``/ui/`` (docs/operator-pages.md): server-rendered HTML
(Jinja, autoescaped), a little JavaScript of our own and Plotly's, every asset served here.

- :mod:`etl_app.ui.session`: sign-in with an API key, the session cookie, CSRF, roles;
- :mod:`etl_app.ui.blueprint`: the blueprint, its assets and the page helpers;
- one module per page (``overview``, ``ingestions``, ``dead_letters``, ``records``, ``quality``,
  ``jobs``, ``providers``), each calling the same domain functions as the HTTP API and the CLI.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    # each page's module adds its routes to the blueprint when imported
    from etl_app.ui import (  # noqa: F401
        dead_letters,
        ingestions,
        jobs,
        overview,
        pages,
        providers,
        quality,
        records,
        session,
    )
    from etl_app.ui.blueprint import bp

    session.init_app(app)
    app.register_blueprint(bp)
