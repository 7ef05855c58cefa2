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
from flask import Blueprint, request
from marshmallow import Schema

from etl_app.api.bodies import Day, QualityDays, TutorDays, described, one_of
from etl_app.api.common import record_type_or_404
from etl_app.api.spec import operation, reply
from etl_app.clock import utcnow
from etl_app.jobs.rollups import tutor_days
from etl_app.quality import as_report, in_schema_order
from etl_app.quality.daily import quality_days
from etl_app.quality.days import BadRange, parse_day_range
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


class DayRange(Schema):
    from_ = Day(data_key="from", attribute="from", **described("first UTC day (default: 29 days before to)"))
    to = Day(**described("last UTC day, inclusive (default: today); at most 366 days"))


ERRORS = {400: "a bad day or range", 404: "unknown type or tutor"}


@bp.get("/quality/<type_name>")
@operation(
    lambda ctx: {
        "summary": "Daily quality of a record type (quality.md), as the daily-quality job computed it",
        "tags": ["jobs"],
        "path": {"record_type": one_of(ctx.registry.names())},
        "query": DayRange,
        "responses": {200: ("one entry per day with data, oldest first", QualityDays), **ERRORS},
    }
)
def get_quality(type_name: str):
    record_type = record_type_or_404(type_name)
    start, end = day_range()
    with current_runtime().engine.connect() as conn:
        rows = quality_days(conn, record_type.name, start, end)
    days: list[dict[str, Any]] = []
    for row in rows:
        report = as_report(row)
        report["completeness"] = in_schema_order(record_type, report["completeness"])  # not jsonb's order
        days.append({"day": row["day"], **report})
    return reply(QualityDays, {"record_type": record_type.name, "from": start, "to": end, "days": days})


@bp.get("/tutors/<tutor_id>/metrics")
@operation(
    summary="A tutor's performance per UTC day of scheduled_start (days without sessions omitted)",
    tags=["jobs"],
    query=DayRange,
    responses={200: ("one entry per day with sessions, oldest first", TutorDays), **ERRORS},
)
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
    return reply(TutorDays, {"tutor_id": tutor_id, "from": start, "to": end, "days": days})
