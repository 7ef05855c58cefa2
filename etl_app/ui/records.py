"""Record lookup: one stored record by type and natural key, as the table holds it, its derived
fields, and its lineage as a timeline.

- ``GET /ui/records``: the form (record type, natural key); with ``type`` and ``key`` in the query
  it sends to the record's page.
- ``GET /ui/records/<type>/<key>``: the record. Its row is read along the table's primary key (the
  natural key) and its lineage by :func:`etl_app.lineage.lineage`, the function of
  ``GET /api/v1/records/{type}/{key}``, in one read-only snapshot. An unknown type or key: a 404
  page naming what was looked for.

Every value reaches the page as text (Jinja escapes it); the record as JSON sits in a ``<pre>``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import orjson
from flask import redirect, request, url_for

from etl_app.lineage import key_history, lineage
from etl_app.lineage.records import kept_extra, record_fields, stored_row
from etl_app.ui.blueprint import bp, counted, render
from etl_app.web.context import current_runtime


def shown(value: Any) -> str:
    """A stored value as the page prints it: null, true/false, ISO times, JSON for lists."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        return orjson.dumps(value, default=str).decode()
    return str(value)


def as_json(value: Any) -> str:
    """Indented JSON of ``value`` (times in ISO 8601), for a ``<pre>``."""
    return orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def error_text(errors: Any) -> str:
    """A rejection's field errors (``{field: [message, ...]}``) as one line."""
    if isinstance(errors, dict):
        parts = []
        for field, messages in errors.items():
            listed = messages if isinstance(messages, list) else [messages]
            parts.append(f"{field}: {' '.join(shown(m) for m in listed)}")
        return "; ".join(parts)
    return shown(errors)


def _place(entry: dict) -> str:
    if entry["file"]:
        return f"{entry['file']['filename']}, row {entry['file']['row']}"
    if entry["position"] is not None:
        return f"item {entry['position']} of the batch"
    return ""


def _step(kind: str, at: Any, label: str, detail: str = "") -> dict:
    return {"kind": kind, "at": at, "label": label, "detail": detail}


def _dead_letter_steps(dl: dict, replays: list[dict]) -> list[dict]:
    steps = [_step("dead", dl["first_failed_at"], f"dead-lettered ({dl['error_type']})", dl["error"] or "")]
    if dl["last_failed_at"] and dl["last_failed_at"] != dl["first_failed_at"]:
        steps.append(_step("dead", dl["last_failed_at"], "failed again", counted(dl["attempts"], "attempt")))
    for replay in replays:
        label = "edited and replayed" if replay["action"] == "edit" else "replay asked"
        said = f" ({replay['message']})" if replay["message"] else ""
        steps.append(_step("replay", replay["at"], label, f"by {replay['key_id']}: {replay['outcome']}{said}"))
    if dl["replays_not_listed"]:
        n = dl["replays_not_listed"]
        outcome = dl["last_outcome"] or "none yet"
        detail = f"{n} replay{'s' if n != 1 else ''} by a bulk replay or the parent's arrival; last outcome {outcome}"
        steps.append(_step("replay", dl["last_replayed_at"], "replayed", detail))
    if dl["superseded_by"]:
        newer = dl["superseded_by"]
        detail = f"by raw record {newer['raw_record_id']} of ingestion {newer['ingestion_id']}"
        steps.append(_step("superseded", dl["last_replayed_at"] or dl["last_failed_at"], "superseded", detail))
    return steps


def timeline_entry(entry: dict) -> dict:
    """One entry of ``lineage()['history']`` as a group of dated steps, in time order (an
    undated step, such as a record still in flight, last)."""
    place = _place(entry)
    origin = f"via {entry['source'] or 'unknown source'}" + (f", {place}" if place else "")
    if entry["kind"] == "rejection":
        by = "the upload parser" if entry["source"] == "upload" else "the API"
        steps = [_step("rejected", entry["received_at"], f"rejected by {by}", error_text(entry["errors"]))]
        return {"entry": entry, "title": f"Rejection {entry['rejection_id']}", "origin": origin, "steps": steps}
    steps = [_step("received", entry["received_at"], "received", origin)]
    if entry["dead_letter"] is not None:
        steps += _dead_letter_steps(entry["dead_letter"], entry["replays"])
    status = entry["status"]
    if status == "persisted":
        steps.append(_step("persisted", entry["settled_at"], "persisted"))
    elif status == "rejected":
        refused = "refused when its file was parsed"
        steps.append(_step("rejected", entry["settled_at"], refused, error_text(entry["errors"] or "")))
    elif status == "received":
        attempts = entry["attempts"] or 0
        steps.append(
            _step("in_flight", None, "in the pipeline", f"not settled yet; {counted(attempts, 'attempt')} so far")
        )
    timed = sorted((s for s in steps if s["at"] is not None), key=lambda s: s["at"])
    steps = timed + [s for s in steps if s["at"] is None]
    title = f"Raw record {entry['raw_record_id']}"
    return {"entry": entry, "title": title, "origin": origin, "steps": steps}


def _form(type_name: str, key: str, missing: str | None = None) -> str:
    """The lookup form, filled in, with what was not found if anything."""
    registry = current_runtime().registry
    return render(
        "ui/records.html",
        title="Record not found" if missing else "Records",
        active="ui.records",
        record_types=[(rt.name, rt.key) for rt in registry],
        chosen=type_name,
        key=key,
        missing=missing,
    )


@bp.get("/records")
def records():
    type_name, key = request.args.get("type", "").strip(), request.args.get("key", "").strip()
    if type_name and key:
        return redirect(url_for("ui.record", type_name=type_name, key=key))
    return _form(type_name, key)


@bp.get("/records/<type_name>/<path:key>")
def record(type_name: str, key: str):
    record_type = current_runtime().registry.get(type_name)
    if record_type is None:
        return _form(type_name, key, f"There is no record type {type_name!r}."), 404
    engine = current_runtime().engine
    # The row and its history in one read-only snapshot, as GET /api/v1/records/... reads them.
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        row = stored_row(conn, record_type, key)
        found = lineage(conn, record_type, row) if row is not None else key_history(conn, record_type.name, key)
    if row is None and not found["history"]:
        missing = f"No {record_type.name} record with {record_type.key} {key!r} is stored (yet)."
        return _form(type_name, key, missing), 404
    # a key that never landed (dead-lettered, rejected, in flight): its history without a row
    fields, derived = record_fields(record_type, row) if row is not None else ({}, {})
    extra = kept_extra(row) if row is not None else None
    return render(
        "ui/record.html",
        title=f"{record_type.name} · {key}",
        active="ui.records",
        record_type=record_type,
        key=key,
        fields=fields,
        derived=derived,
        extra=extra,
        lineage=found,
        timeline=[timeline_entry(entry) for entry in found["history"]],
        stored_json=as_json({"fields": fields, "derived": derived, "extra": extra}),
        stored=row is not None,
        shown=shown,
    )
