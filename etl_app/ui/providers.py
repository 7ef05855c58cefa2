"""The Providers page: per external lookup provider, its calls, cache hit share, errors and
breaker state, with "Reset breaker" for operators (the API's :func:`reset_provider`)."""

from __future__ import annotations

from flask import flash, jsonify, redirect, url_for

from etl_app.ui.blueprint import bp, render
from etl_app.ui.session import requires_operate
from etl_app.web.context import ApiError
from etl_app.web.providers import listed_providers, reset_provider


def _listed() -> tuple[list[dict], str | None]:
    try:
        return listed_providers(), None
    except ApiError as exc:
        return [], exc.message


@bp.get("/providers")
def providers():
    listed, error = _listed()
    return render("ui/providers.html", title="Providers", active="ui.providers", providers=listed, error=error)


@bp.get("/api/providers")
def providers_json():
    listed, error = _listed()
    return jsonify({"providers": listed, "error": error})


@bp.post("/providers/<name>/reset")
@requires_operate("breaker_reset", lambda name: {"provider": name})
def reset_breaker(name: str):
    try:
        reset_provider(name)
    except ApiError as exc:
        flash(exc.message, "error")
    else:
        flash(f"The breaker of {name} is closed: the next lookups call it again.", "ok")
    return redirect(url_for("ui.providers"))
