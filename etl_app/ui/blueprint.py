"""The ``ui`` blueprint: its templates and assets, and what every page shares.

Assets are served by the app itself (no CDN, nothing fetched at run time): our ``ui.css`` and
``ui.js`` from ``static/``, and Plotly's ``plotly.min.js`` from the ``plotly`` package that the
README's install puts in the environment (``/ui/assets/plotly.min.js``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, render_template, send_from_directory

from etl_app import durations
from etl_app.ui.session import current_user

bp = Blueprint(
    "ui",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

# Assets of Python packages, by the name a page asks for: (package, folder inside it, file).
_PACKAGE_ASSETS = {"plotly.min.js": ("plotly", "package_data", "plotly.min.js")}

# The pages of the navigation: (endpoint, label).
NAVIGATION = (
    ("ui.overview", "Overview"),
    ("ui.ingestions", "Ingestions"),
    ("ui.dead_letters", "Dead letters"),
    ("ui.records", "Records"),
    ("ui.quality", "Quality"),
    ("ui.jobs", "Jobs"),
    ("ui.providers", "Providers"),
)


@bp.get("/assets/<name>")
def package_asset(name: str):
    """A JavaScript library shipped inside its PyPI package (cached for a day)."""
    if name not in _PACKAGE_ASSETS:
        abort(404)
    package, folder, filename = _PACKAGE_ASSETS[name]
    module = __import__(package)
    return send_from_directory(Path(module.__file__).parent / folder, filename, max_age=86400)


def flower_url() -> str:
    """Where the overview's link to Flower points: ``ETL_FLOWER_URL``, else Flower's address and
    port of the Procfile (``FLOWER_ADDRESS``, ``FLOWER_PORT``; 127.0.0.1:5555)."""
    configured = os.environ.get("ETL_FLOWER_URL", "").strip()
    if configured:
        return configured
    host = os.environ.get("FLOWER_ADDRESS", "").strip() or "127.0.0.1"
    return f"http://{host}:{os.environ.get('FLOWER_PORT', '').strip() or '5555'}/"


def render(template: str, *, title: str, active: str | None = None, **context: Any) -> str:
    """A page: ``template`` inside the layout, with the signed-in user and the navigation."""
    from flask import current_app

    return render_template(
        template,
        title=title,
        active=active,
        user=current_user(),
        navigation=[(endpoint, label) for endpoint, label in NAVIGATION if endpoint in current_app.view_functions],
        flower_url=flower_url(),
        **context,
    )


# Content-Security-Policy of every page: nothing but this site's own scripts, no inline script,
# no framing. (Plotly sets inline styles on its SVG, hence ``style-src 'unsafe-inline'``.)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@bp.after_request
def _security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.app_template_filter("counted")
def counted(n: int, word: str) -> str:
    """``1 attempt``, ``2 attempts``: a count and its noun, singular for one."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


@bp.app_template_filter("when")
def when(value: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS`` UTC (ISO text or datetime); empty for None."""
    from datetime import UTC, datetime

    if value is None or value == "":
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """A duration in at most two units (``120d 7h``: :func:`etl_app.durations.human`, as the
    command line prints it); ``—`` for None."""
    return "—" if seconds is None else durations.human(seconds)


@bp.app_template_filter("exact_seconds")
def exact_seconds(seconds: float | None) -> str:
    """The same duration in seconds to the millisecond (``10,394,437.25 s``), for hover text."""
    return "" if seconds is None else durations.exact(seconds)
