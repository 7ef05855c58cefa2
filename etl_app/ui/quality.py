"""Quality: per record type, the daily quality metrics (docs/quality.md) as line charts over a range of
days, each day's level, and the same numbers in a table below each chart.

- ``GET /ui/quality?type=<type>&from=YYYY-MM-DD&to=YYYY-MM-DD``: every type, or the one asked;
  ``to`` defaults to today (UTC), ``from`` to 29 days before ``to``, at most 366 days, both ends
  inclusive, as ``GET /api/v1/quality/{type}``. A day that is not a day, or a range that ends
  before it starts or is too long: a 400 page saying so. An unknown type: 404.
- ``GET /ui/api/quality?...``: the same days as JSON ``{from, to, types: [{record_type, days}]}``.

The rows are the daily-quality job's (:func:`etl_app.quality.daily.quality_days`, which the API
reads too): one indexed read of ``daily_quality`` per type. The page hands each chart its days as
a JSON data attribute; ``static/quality.js`` draws them with Plotly.
"""

from __future__ import annotations

from datetime import UTC, date
from typing import Any

from flask import jsonify, request

from etl_app.clock import utcnow
from etl_app.quality import as_report
from etl_app.quality.daily import quality_days
from etl_app.quality.days import BadRange, parse_day_range
from etl_app.ui.blueprint import bp, render
from etl_app.web.context import current_runtime

# The shares drawn as lines, in the legend's order: (metric, label).
SHARES = (
    ("score", "score"),
    ("validity", "validity"),
    ("completeness", "completeness (overall)"),
    ("uniqueness", "uniqueness"),
    ("integrity", "integrity"),
)


def series(days: list[dict[str, Any]]) -> dict[str, list]:
    """The days as the chart draws them: one list per metric, the day and its level beside."""
    out: dict[str, list] = {"day": [d["day"].isoformat() for d in days], "level": [d["level"] for d in days]}
    for metric, _ in SHARES:
        if metric == "completeness":
            out[metric] = [(d["completeness"] or {}).get("overall") for d in days]
        else:
            out[metric] = [d[metric] for d in days]
    return out


class UnknownType(LookupError):
    pass


def _asked() -> tuple[list[str], date, date]:
    """The types and range of this request (:class:`BadRange`, :class:`UnknownType`)."""
    registry = current_runtime().registry
    chosen = request.args.get("type", "").strip()
    if chosen and chosen not in registry:
        raise UnknownType(f"There is no record type {chosen[:60]!r}.")
    today = utcnow().astimezone(UTC).date()
    asked = {name: request.args.get(name, "").strip() or None for name in ("from", "to")}  # blank: the default
    start, end = parse_day_range(asked["from"], asked["to"], today)
    return ([chosen] if chosen else registry.names()), start, end


def _days(types: list[str], start: date, end: date) -> list[tuple[str, list[dict[str, Any]]]]:
    found = []
    with current_runtime().engine.connect() as conn:
        for name in types:
            rows = quality_days(conn, name, start, end)
            found.append((name, [{"day": row["day"], **as_report(row)} for row in rows]))
    return found


@bp.get("/quality")
def quality():
    context = {
        "title": "Quality",
        "active": "ui.quality",
        "record_types": current_runtime().registry.names(),
        "chosen": request.args.get("type", "").strip(),
        "asked_from": request.args.get("from", "").strip(),
        "asked_to": request.args.get("to", "").strip(),
        "shares": SHARES,
    }
    try:
        types, start, end = _asked()
    except (BadRange, UnknownType) as exc:
        status = 404 if isinstance(exc, UnknownType) else 400
        return render("ui/quality.html", error=str(exc), types=[], **context), status
    shown = [{"record_type": name, "days": days, "series": series(days)} for name, days in _days(types, start, end)]
    context.update(asked_from=start.isoformat(), asked_to=end.isoformat())
    return render("ui/quality.html", error=None, types=shown, **context)


@bp.get("/api/quality")
def quality_json():
    try:
        types, start, end = _asked()
    except (BadRange, UnknownType) as exc:
        status = 404 if isinstance(exc, UnknownType) else 400
        return jsonify({"error": "not_found" if status == 404 else "invalid_parameter", "message": str(exc)}), status
    found = _days(types, start, end)
    return jsonify({"from": start, "to": end, "types": [{"record_type": n, "days": d} for n, d in found]})
