"""The quality-recompute job: stored quality measured again with the current definitions.

What settled before an upgrade that changed a definition (e.g. completeness ``overall`` over a
type's expected fields), or before a record type changed its ``expected`` fields, keeps the
numbers it was stored with until this job runs. It rewrites, for every registered type, within
its window (default: every day up to today):

- the stored quality of each settled ingestion created in the window (``ingestions.quality``),
  measured again exactly as :mod:`etl_app.quality.settle` measures it, keyset-paged along
  ``(record_type, created_at, id)`` in batches of at most :data:`INGESTIONS_PER_BATCH` (and
  ``ETL_JOB_BATCH_SIZE``) ingestions, each batch committed: an interrupted run loses one batch,
  and the next run does it again. The write is conditional: an ingestion a replay reopened
  meanwhile (quality cleared) or that settled again (another ``finished_at``) is left to its
  settle;
- the ``daily_quality`` rows from the type's first to its last stored day in the window, by the
  daily-quality job's own statement (:mod:`etl_app.quality.daily`), :data:`DAYS_PER_BATCH` days a
  transaction.

A group some of whose payloads the retention job dropped cannot be measured again: its stored
per-field shares are kept, and ``overall``, ``score`` and ``level`` are read again from them
(:func:`rederived`): ``overall`` the mean of the stored shares of the expected fields, the score
the mean of the stored parts. Stored shares are rounded, so this may differ from a fresh measure
by rounding; a report within :data:`ROUNDING` of what it would become is left as it is. A
waiver that reads the payload (a no-show's ``actual_start``) cannot be applied then.

Only rows that change are written, so a second run over the same rows writes none and gives the
same rows. Beat does not schedule it: run it once after an upgrade (``etl-app jobs run
quality-recompute``), or after changing a type's expected fields.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from statistics import fmean
from typing import Any

import orjson
import sqlalchemy as sa

from etl_app.jobs.context import JobContext, Window
from etl_app.jobs.days import bounds
from etl_app.models import sql
from etl_app.quality import BY_INGESTIONS, as_report, level_of, quality_select
from etl_app.quality.daily import replace_statement
from etl_app.quality.settle import empty_report, stored_form
from etl_app.record_types import RecordType, get_registry

INGESTIONS_PER_BATCH = 500
DAYS_PER_BATCH = 31
ROUNDING = 0.0002  # how far a report read again from rounded shares may be from a fresh measure

_PAGE = sql(
    """
    SELECT i.id, i.created_at, i.finished_at, i.quality FROM ingestions i
    WHERE i.record_type = :t AND i.quality IS NOT NULL AND i.created_at >= :lo AND i.created_at < :hi
      AND (i.created_at, i.id) > (:after_at, :after_id)
    ORDER BY i.created_at, i.id LIMIT :n
    """
)
_WRITE = sql(
    """
    UPDATE ingestions i SET quality = m.quality
    FROM unnest(CAST(:ids AS uuid[]), CAST(:reports AS jsonb[]), CAST(:finished AS timestamptz[]))
         AS m(id, quality, finished_at)
    WHERE i.id = m.id AND i.quality IS NOT NULL AND i.finished_at IS NOT DISTINCT FROM m.finished_at
      AND i.quality IS DISTINCT FROM m.quality
    RETURNING i.id
    """
)
_SPAN = sql("SELECT min(day), max(day) FROM daily_quality WHERE record_type = :t AND day BETWEEN :start AND :end")
_DAYS = sql(
    "SELECT day, received, accepted, validity, completeness, uniqueness, integrity, score, level "
    "FROM daily_quality WHERE record_type = :t AND day BETWEEN :start AND :end"
)
_DAY_WRITE = sql(
    "UPDATE daily_quality SET completeness = CAST(:completeness AS jsonb), score = :score, level = :level "
    "WHERE record_type = :t AND day = :day"
)


def _rounded(value: float) -> float:
    return float(Decimal(repr(value)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def _near(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= ROUNDING + 1e-9)


def rederived(record_type: RecordType, report: dict[str, Any]) -> dict[str, Any]:
    """``report`` (an as_report shape) with ``completeness.overall``, ``score`` and ``level`` read
    again from its stored shares and parts with the type's current expected fields; the report
    itself when nothing was accepted or when it is within :data:`ROUNDING` of that already."""
    completeness = report.get("completeness")
    if not report.get("accepted") or not isinstance(completeness, dict):
        return report
    expected = [e.field for e in record_type.expected_fields]
    overall = _rounded(fmean(float(completeness.get(name) or 0.0) for name in expected)) if expected else None
    parts = [report.get("validity"), overall, report.get("uniqueness"), report.get("integrity")]
    present = [float(p) for p in parts if p is not None]
    score = _rounded(fmean(present)) if present else None
    if _near(completeness.get("overall"), overall) and _near(report.get("score"), score):
        return report
    level = level_of(score)
    return {**report, "completeness": {**completeness, "overall": overall}, "score": score, "level": level}


def _measure(conn: sa.Connection, record_type: RecordType, ids: list[uuid.UUID]) -> dict[uuid.UUID, sa.RowMapping]:
    statement = sql(
        quality_select(
            record_type,
            **BY_INGESTIONS,
        )
    )
    return {row["k"]: row for row in conn.execute(statement, {"t": record_type.name, "ids": ids}).mappings()}


def _ingestion_batch(ctx: JobContext, record_type: RecordType, page: list[sa.Row]) -> int:
    ctx.conn.execute(sa.text("SET LOCAL jit = off"))  # as in settle: the planner's guess would JIT-compile
    measured = _measure(ctx.conn, record_type, [row.id for row in page])
    ids, reports, finished = [], [], []
    for row in page:
        fresh = measured.get(row.id)
        if fresh is None:
            report = empty_report()
        elif fresh["payloads_dropped"]:
            report = rederived(record_type, row.quality)
        else:
            report = as_report(fresh)
        ids.append(row.id)
        reports.append(stored_form(report))
        finished.append(row.finished_at)
    written = ctx.conn.execute(_WRITE, {"ids": ids, "reports": reports, "finished": finished}).all()
    ctx.commit()
    return len(written)


def _ingestions(ctx: JobContext, record_type: RecordType, size: int) -> int:
    params = {**bounds(ctx.window), "t": record_type.name, "n": size}
    after: tuple[datetime, Any] = (params["lo"] - timedelta(microseconds=1), uuid.UUID(int=0))
    touched = 0
    while True:
        page = ctx.conn.execute(_PAGE, {**params, "after_at": after[0], "after_id": after[1]}).all()
        if not page:
            ctx.commit()
            return touched
        touched += _ingestion_batch(ctx, record_type, page)
        after = (page[-1].created_at, page[-1].id)


def _chunks(start: date, end: date) -> list[Window]:
    out = []
    while start <= end:
        last = min(end, start + timedelta(days=DAYS_PER_BATCH - 1))
        out.append(Window(start, last))
        start = last + timedelta(days=1)
    return out


def _days(ctx: JobContext, record_type: RecordType) -> int:
    first, last = ctx.conn.execute(
        _SPAN, {"t": record_type.name, "start": ctx.window.start, "end": ctx.window.end}
    ).one()
    if first is None:
        return 0
    touched = 0
    statement = replace_statement(record_type)
    for chunk in _chunks(first, last):
        ctx.conn.execute(sa.text("SET LOCAL jit = off"))
        params = {**bounds(chunk), "t": record_type.name}
        touched += ctx.conn.execute(statement, params).scalar_one()
        # the days kept as measured (payloads dropped) are read again from their stored parts
        for row in ctx.conn.execute(_DAYS, params).mappings().all():
            stored = dict(row)
            report = rederived(record_type, stored)
            if report is not stored:
                ctx.conn.execute(
                    _DAY_WRITE,
                    {
                        "t": record_type.name,
                        "day": row["day"],
                        "completeness": orjson.dumps(report["completeness"]).decode(),
                        "score": report["score"],
                        "level": report["level"],
                    },
                )
                touched += 1
        ctx.commit()
    return touched


def run_quality_recompute(ctx: JobContext) -> int:
    """Rewrite the stored quality of every registered type's ingestions and days in the window
    with the current definitions; returns the rows changed."""
    size = max(1, min(INGESTIONS_PER_BATCH, ctx.settings.job_batch_size))
    touched = 0
    for record_type in get_registry():
        touched += _ingestions(ctx, record_type, size)
        touched += _days(ctx, record_type)
    return touched
