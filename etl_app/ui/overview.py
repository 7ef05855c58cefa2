"""The Overview page."""

from __future__ import annotations

from etl_app.ui.blueprint import bp, render


@bp.get("/overview")
def overview():
    return render("ui/overview.html", title="Overview", active="ui.overview")
