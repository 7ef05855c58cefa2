"""What the scheduled jobs computed: daily quality per record type and the tutor rollup.

- ``GET /api/v1/quality/<type>?from=YYYY-MM-DD&to=YYYY-MM-DD``: the daily-quality rows of
  ``<type>`` (404 for an unknown type) as ``{record_type, from, to, days: [{day, ...metrics}]}``.
- ``GET /api/v1/tutors/<tutor_id>/metrics?from=&to=``: the tutor's rollup rows as
  ``{tutor_id, from, to, days: [{day, sessions, ...}]}``; days without sessions are absent; 404
  when no such tutor is stored and no row names it.

Both ranges are UTC days, both ends inclusive, at most 366 days (400 otherwise, as for a day
that is not ``YYYY-MM-DD`` or a range that ends before it starts). ``to`` defaults to today,
``from`` to 29 days before ``to`` (the last 30 days). Days the job has not computed (yet) are
absent too: the rows are only as fresh as the job's last run.
"""

from __future__ import annotations

from datetime import UTC, date
from typing import Any

import sqlalchemy as sa
from apispec import APISpec
from flask import Blueprint, jsonify, request

from etl_app.api.common import record_type_or_404
from etl_app.clock import utcnow
from etl_app.jobs.rollups import tutor_days
from etl_app.quality import LEVELS, UNUSABLE, as_report, quality_fields
from etl_app.quality.daily import quality_days
from etl_app.quality.days import BadRange, parse_day_range
from etl_app.record_types import Registry
from etl_app.web.context import ApiError, current_runtime

bp = Blueprint("reports", __name__, url_prefix="/api/v1")


def day_range() -> tuple[date, date]:
    """The request's ``from`` and ``to`` days (see the module docstring for defaults and limits);
    any other query parameter is refused."""
    unknown = sorted(set(request.args) - {"from", "to"})
    if unknown:
        raise ApiError(
            400, "invalid_parameter", f"{unknown[0][:40]!r} is not a parameter; they are from, to", parameter=unknown[0]
        )
    try:
        return parse_day_range(request.args.get("from"), request.args.get("to"), utcnow().astimezone(UTC).date())
    except BadRange as exc:
        raise ApiError(400, "invalid_parameter", str(exc), parameter=exc.parameter) from None


@bp.get("/quality/<type_name>")
def get_quality(type_name: str):
    record_type = record_type_or_404(type_name)
    start, end = day_range()
    with current_runtime().engine.connect() as conn:
        rows = quality_days(conn, record_type.name, start, end)
    order = [name for name, _ in quality_fields(record_type)] + ["overall"]
    days: list[dict[str, Any]] = []
    for row in rows:
        report = as_report(row)
        if report["completeness"] is not None:  # the schema's order, not jsonb's
            report["completeness"] = {k: report["completeness"][k] for k in order if k in report["completeness"]}
        days.append({"day": row["day"], **report})
    return jsonify({"record_type": record_type.name, "from": start, "to": end, "days": days})


@bp.get("/tutors/<tutor_id>/metrics")
def get_tutor_metrics(tutor_id: str):
    start, end = day_range()
    with current_runtime().engine.connect() as conn:
        known = conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM tutors WHERE tutor_id = :id) "
                "OR EXISTS (SELECT 1 FROM tutor_daily_metrics WHERE tutor_id = :id)"
            ),
            {"id": tutor_id},
        ).scalar_one()
        if not known:
            raise ApiError(404, "not_found", f"no tutor {tutor_id!r} is stored")
        days = tutor_days(conn, tutor_id, start, end)
    return jsonify({"tutor_id": tutor_id, "from": start, "to": end, "days": days})


# -- OpenAPI (etl_app.api.openapi adds these paths) --------------------------------------------

ERRORS = {
    str(code): {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for code, text in ((400, "a bad day or range"), (401, "missing or wrong API key"), (404, "unknown type or tutor"))
}


DAYS = [
    {
        "name": "from",
        "in": "query",
        "description": "first UTC day (default: 29 days before to)",
        "schema": {"type": "string", "format": "date"},
    },
    {
        "name": "to",
        "in": "query",
        "description": "last UTC day, inclusive (default: today); at most 366 days",
        "schema": {"type": "string", "format": "date"},
    },
]


def _report_path(spec: APISpec, path: str, summary: str, key: dict, day: dict) -> None:
    """A GET of the days of one thing (its path parameter ``key``) over a range of days."""
    name = key["name"]
    body = {
        "type": "object",
        "properties": {
            name: {"type": "string"},
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "days": {"type": "array", "items": day},
        },
    }
    spec.path(
        path=path,
        operations={
            "get": {
                "summary": summary,
                "tags": ["jobs"],
                "security": [{"bearer": []}],
                "parameters": [key, *DAYS],
                "responses": {
                    "200": {
                        "description": "one entry per day with data, oldest first",
                        "content": {"application/json": {"schema": body}},
                    },
                    **ERRORS,
                },
            }
        },
    )


def openapi_paths(spec: APISpec, registry: Registry) -> None:
    """The jobs' results: daily quality per record type and the tutor rollup (docs/quality.md)."""
    share = {"type": "number", "nullable": True}
    quality_day = {
        "type": "object",
        "properties": {
            "day": {"type": "string", "format": "date"},
            **{name: {"type": "integer"} for name in ("received", "accepted", "rejected")},
            "validity": {"type": "number"},
            "completeness": {
                "type": "object",
                "nullable": True,
                "additionalProperties": {"type": "number"},
                "description": "{field: share} for every input field, and overall",
            },
            "uniqueness": share,
            "integrity": share,
            "timeliness": {
                "type": "object",
                "nullable": True,
                "description": "lag in seconds",
                "properties": {k: {"type": "number"} for k in ("p50", "p95", "max")},
            },
            "score": share,
            "level": {"type": "string", "enum": [*(name for name, _ in LEVELS), UNUSABLE]},
            "top_errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "field": {"type": "string"},
                        "message": {"type": "string"},
                        "count": {"type": "integer"},
                    },
                },
            },
        },
    }
    _report_path(
        spec,
        "/api/v1/quality/{record_type}",
        "Daily quality of a record type (docs/quality.md), as the daily-quality job computed it",
        {"name": "record_type", "in": "path", "required": True, "schema": {"type": "string", "enum": registry.names()}},
        quality_day,
    )
    counts = ("sessions", "completed", "no_shows", "late_starts", "tutor_reschedules", "technical_issues")
    tutor_day = {
        "type": "object",
        "properties": {
            "day": {"type": "string", "format": "date"},
            **{name: {"type": "integer"} for name in (*counts, "feedback_count")},
            "avg_engagement": share,
            "avg_rating": share,
        },
    }
    _report_path(
        spec,
        "/api/v1/tutors/{tutor_id}/metrics",
        "A tutor's performance per UTC day of scheduled_start (days without sessions omitted)",
        {"name": "tutor_id", "in": "path", "required": True, "schema": {"type": "string"}},
        tutor_day,
    )
