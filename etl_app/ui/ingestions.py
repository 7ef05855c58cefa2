"""The Ingestions pages: the list (newest first, by type and status, keyset pagination) with each
one's progress bar and quality level, and one ingestion with its counts, upload, quality
scorecard (docs/quality.md), top errors, rejections (and their CSV), dead letters, and how many
of its records wait for their parents, with the operator's "Give up now" (etl_app.web.waiting).

Everything an ingestion is comes from :func:`etl_app.quality.settle.ingestion_status`, as
``GET /api/v1/ingestions/{id}`` shows it; its rejections from :mod:`etl_app.api.rejections`, its
dead letters from :func:`etl_app.dead_letters.queries.list_dead_letters`. The pages poll
``/ui/api/ingestions`` (the running rows of the list) and ``/ui/api/ingestions/<id>`` while it runs.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from flask import abort, current_app, flash, jsonify, redirect, request, url_for

from etl_app.dead_letters import waiting
from etl_app.dead_letters.filters import ALL, Filters
from etl_app.dead_letters.queries import list_dead_letters
from etl_app.ingest.listing import DEFAULT_LIMIT, MAX_LIMIT, STATUSES, BadCursor, list_ingestions, segments
from etl_app.ingest.progress import IN_PROGRESS
from etl_app.jsonsafe import json_safe
from etl_app.quality import level_of
from etl_app.quality.settle import ingestion_status
from etl_app.ui.blueprint import bp, duration, exact_seconds, render
from etl_app.ui.session import requires_operate
from etl_app.web.context import ApiError, current_runtime
from etl_app.web.rejections import PAGE as REJECTIONS_PAGE
from etl_app.web.rejections import download_response, errors_text, ingestion_or_404, rejection_item
from etl_app.web.waiting import give_up_now

REJECTIONS_PER_PAGE = 25
TEXT_SHOWN = 2000  # characters of a rejection's values, and of its errors, in a row of the page
DEAD_LETTERS_SHOWN = 20
MAX_POLLED = MAX_LIMIT  # ids one poll of the list may ask about


def _report(conn, ident: uuid.UUID) -> dict[str, Any] | None:
    runtime = current_runtime()
    return ingestion_status(conn, ident, runtime.registry, runtime.settings)


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def scorecard(quality: dict[str, Any] | None, expected: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The quality report as rows of ``{metric, value, level, title}`` (value as text; level None
    where a metric has none; title: the exact seconds of a duration, for hover, else None), in
    docs/quality.md's order. A field's share has a level only when the field is one of the type's
    ``expected`` ones (marked so): the others lower nothing. Durations read as the command line
    prints them (``120d 7h``)."""
    if not quality:
        return []
    rows: list[dict[str, Any]] = [
        {"metric": "received", "value": str(quality.get("received")), "level": None},
        {"metric": "accepted", "value": str(quality.get("accepted")), "level": None},
        {"metric": "rejected", "value": str(quality.get("rejected")), "level": None},
    ]
    validity = quality.get("validity")
    rows.append({"metric": "validity", "value": _share(validity), "level": level_of(validity)})
    completeness = quality.get("completeness") or {}
    overall = completeness.get("overall")
    rows.append({"metric": "completeness (overall)", "value": _share(overall), "level": level_of(overall)})
    for field, share in completeness.items():
        if field != "overall":
            wanted = field in expected
            label = f"completeness · {field}" + (" (expected)" if wanted else "")
            rows.append({"metric": label, "value": _share(share), "level": level_of(share) if wanted else None})
    for name in ("uniqueness", "integrity"):
        rows.append({"metric": name, "value": _share(quality.get(name)), "level": level_of(quality.get(name))})
    timeliness = quality.get("timeliness")
    for part in ("p50", "p95", "max"):
        value = None if not timeliness else timeliness.get(part)
        rows.append(
            {
                "metric": f"timeliness {part}",
                "value": duration(value),
                "level": None,
                "title": exact_seconds(value) or None,
            }
        )
    rows.append({"metric": "score", "value": _share(quality.get("score")), "level": quality.get("level")})
    return [{"title": None, **row} for row in rows]


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What a row of the list and the head of one ingestion's page show."""
    quality = report["quality"]
    return {
        "id": str(report["id"]),
        "record_type": report["record_type"],
        "source": report["source"],
        "status": report["status"],
        "counts": report["counts"],
        "segments": segments(report["counts"]),
        "level": quality["level"] if quality else None,
        "created_at": report["created_at"],
        "finished_at": report["finished_at"],
        "upload": report["upload"],
        "url": url_for("ui.ingestion", ingestion_id=str(report["id"])),
    }


def _expected(record_type: str) -> frozenset[str]:
    known = current_runtime().registry.get(record_type)
    return frozenset(e.field for e in known.expected_fields) if known is not None else frozenset()


def _detail(report: dict[str, Any]) -> dict[str, Any]:
    quality = report["quality"]
    return {
        **summary(report),
        "scorecard": scorecard(quality, _expected(report["record_type"])),
        "top_errors": [{**e, "message": _shown(str(e["message"]))} for e in (quality or {}).get("top_errors") or []],
    }


# -- the list -----------------------------------------------------------------------------------


@bp.get("/ingestions")
def ingestions():
    registry = current_runtime().registry
    record_type = request.args.get("type") or None
    status = request.args.get("status") or None
    cursor = request.args.get("cursor") or None
    if record_type is not None and record_type not in registry.names():
        abort(400, description=f"There is no record type {record_type!r}.")
    if status is not None and status not in STATUSES:
        abort(400, description=f"The status is one of {', '.join(STATUSES)}.")
    with current_runtime().engine.connect() as conn:
        try:
            listed = list_ingestions(conn, record_type=record_type, status=status, cursor=cursor, limit=DEFAULT_LIMIT)
        except BadCursor:
            abort(400, description="That page link is not valid; start again from the newest.")
        rows = [summary(report) for report in (_report(conn, ident) for ident in listed.ids) if report is not None]
    older = None
    if listed.next is not None:
        args = {k: v for k, v in (("type", record_type), ("status", status)) if v}
        older = url_for("ui.ingestions", cursor=listed.next, **args)
    newest = url_for("ui.ingestions", **{k: v for k, v in (("type", record_type), ("status", status)) if v})
    return render(
        "ui/ingestions.html",
        title="Ingestions",
        active="ui.ingestions",
        rows=rows,
        record_types=registry.names(),
        statuses=STATUSES,
        record_type=record_type,
        status=status,
        older=older,
        newest=newest if cursor else None,
    )


@bp.get("/api/ingestions")
def ingestions_json():
    """``{ingestions: [summary]}`` of the ingestions asked for (``?id=`` repeated): the list polls
    its running rows only."""
    idents = []
    for value in request.args.getlist("id")[:MAX_POLLED]:
        try:
            idents.append(uuid.UUID(value))
        except ValueError:
            abort(400, description=f"{value!r} is not an ingestion id.")
    with current_runtime().engine.connect() as conn:
        reports = [_report(conn, ident) for ident in idents]
    return jsonify({"ingestions": [summary(report) for report in reports if report is not None]})


# -- one ingestion --------------------------------------------------------------------------------


def _ident_or_404(ingestion_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(ingestion_id)
    except ValueError:
        abort(404)


@bp.get("/ingestions/<ingestion_id>")
def ingestion(ingestion_id: str):
    ident = _ident_or_404(ingestion_id)
    try:
        start = int(request.args.get("rejections_from") or 0)
    except ValueError:
        abort(400, description="rejections_from is a row number.")
    if not 0 <= start < 2**63:
        abort(400, description="rejections_from is a row number.")
    runtime = current_runtime()
    with runtime.engine.connect() as conn:
        report = _report(conn, ident)
        if report is None:
            abort(404)
        upload = report["upload"] is not None
        found = conn.execute(REJECTIONS_PAGE, {"id": ident, "from": start, "n": REJECTIONS_PER_PAGE + 1}).all()
        rejections = [
            {
                **rejection_item(row, upload=upload),
                "errors_text": _shown(errors_text(row.errors)),
                "raw_text": _shown(_raw_text(row.raw)),
            }
            for row in found[:REJECTIONS_PER_PAGE]
        ]
        dead = list_dead_letters(conn, Filters(ingestion_id=ident, status=ALL), limit=DEAD_LETTERS_SHOWN)
        waits = waiting.list_waiting(conn, ingestion_id=ident)
    following = None
    if len(found) > REJECTIONS_PER_PAGE:
        following = url_for("ui.ingestion", ingestion_id=str(ident), rejections_from=found[-2].position + 1)
    dead_letters_page = None
    if "ui.dead_letters" in current_app.view_functions:
        dead_letters_page = url_for("ui.dead_letters", ingestion_id=str(ident), status=ALL)
    return render(
        "ui/ingestion.html",
        title=f"Ingestion {ident}",
        active="ui.ingestions",
        ingestion=_detail(report),
        running=report["status"] == IN_PROGRESS,
        rejections=rejections,
        rejections_from=start,
        rejections_next=following,
        first_rejections=url_for("ui.ingestion", ingestion_id=str(ident)) if start else None,
        dead_letters=dead.items,
        more_dead_letters=dead.next is not None,
        dead_letters_page=dead_letters_page,
        waiting_count=waits["total"],
        waiting_since=min((g["waiting_since"] for g in waits["groups"] if g["waiting_since"]), default=None),
        wait_seconds=runtime.settings.parent_wait_seconds,
    )


@bp.post("/ingestions/<ingestion_id>/give-up")
@requires_operate("give_up", lambda ingestion_id: {"ingestion_id": ingestion_id})
def ingestion_give_up(ingestion_id: str):
    """The "Give up now" button: the ingestion's records waiting for their parents become
    ``missing_parent`` dead letters now (etl_app.dead_letters.waiting), audited ``give_up``."""
    ident = _ident_or_404(ingestion_id)
    given = give_up_now(waiting.Selector(ingestion_id=ident))
    if given.count:
        more = f" {given.remaining:,} more still wait: give up again for them." if given.remaining else ""
        flash(f"Gave up on {given.count:,} waiting records: they are missing_parent dead letters now.{more}", "ok")
    else:
        flash("Nothing to give up on: no record of this ingestion waits for a parent now.", "ok")
    return redirect(url_for("ui.ingestion", ingestion_id=str(ident)))


def _shown(text: str) -> str:
    """A cell of the page: at most TEXT_SHOWN characters (the downloads hold the rest)."""
    return text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN] + "…"


def _raw_text(raw: Any) -> str:
    """The values as received, as text (JSON; a line that was not JSON as it came)."""
    if raw is None or isinstance(raw, str):
        return raw or ""
    return orjson.dumps(json_safe(raw)).decode()


@bp.get("/api/ingestions/<ingestion_id>")
def ingestion_json(ingestion_id: str):
    ident = _ident_or_404(ingestion_id)
    with current_runtime().engine.connect() as conn:
        report = _report(conn, ident)
    if report is None:
        abort(404)
    return jsonify(_detail(report))


def _download(ingestion_id: str, fmt: str):
    try:
        ident, found = ingestion_or_404(ingestion_id)
        return download_response(ident, found, 0, None, fmt)
    except ApiError:
        abort(404)


@bp.get("/ingestions/<ingestion_id>/rejections.csv")
def ingestion_rejections_csv(ingestion_id: str):
    """Every rejection of the ingestion as the CSV of ``GET /api/v1/ingestions/{id}/rejections?format=csv``."""
    return _download(ingestion_id, "csv")


@bp.get("/ingestions/<ingestion_id>/rejections.xlsx")
def ingestion_rejections_xlsx(ingestion_id: str):
    """The same as a workbook of text cells (``?format=xlsx``)."""
    return _download(ingestion_id, "xlsx")
