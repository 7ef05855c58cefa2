"""The Dead letters pages: dead letters grouped by cause, one group, one dead letter.

- ``GET /ui/dead-letters``: the groups (:func:`etl_app.dead_letters.groups.list_groups`, most dead
  letters first, keyset pages), filtered by record type, error type, status and ingestion; each
  with its count, first and last seen, a sample payload and error, and its arrivals over the last
  24 hours (a Plotly bar chart and the same numbers in a table). The page polls
  ``/ui/api/dead-letters`` for the numbers of the groups it shows.
- ``GET /ui/dead-letters/groups/<group>``: a group's facts and its dead letters (keyset pages,
  :func:`etl_app.dead_letters.queries.list_dead_letters` filtered to the group; its open count
  polled from ``/ui/api/dead-letters``). Operators:
  "Replay group…" shows how many dead letters the replay will touch (a dry run) and asks to
  confirm (``GET``/``POST .../replay``); "Discard group" takes a reason. The same functions as
  ``POST /api/v1/dead-letters/groups/{group}/replay`` and ``.../discard``, audited as
  ``bulk_replay`` and ``bulk_discard``; replayed chains are sent after the commit.
- ``GET /ui/dead-letters/<id>``: one dead letter (error, collapsed traceback, payload as text,
  link to its record's lineage) and its edits as line diffs. Operators: replay, discard (with a
  reason) and "Edit and replay" (:func:`etl_app.dead_letters.edits.edit_and_replay`, as the API's
  edit: validated again, the original and the edit kept with the key id).

Every value reaches the page as text (Jinja escapes it); payloads sit in ``<pre>`` and a
``<textarea>``.
"""

from __future__ import annotations

import difflib
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from flask import abort, current_app, flash, jsonify, redirect, request, url_for

from etl_app.dead_letters import actions, edits, groups, queries
from etl_app.dead_letters.errors import (
    DeadLetterError,
    GroupNotFound,
    InvalidParameter,
    InvalidPayload,
    KeyChanged,
    NotFound,
    NotOpen,
)
from etl_app.dead_letters.filters import ALL, FILTERS, Filters, parse_filters, parse_int
from etl_app.errors import ERROR_TYPES
from etl_app.jsonsafe import DuplicateKey, NestedTooDeep, json_safe, refuse_duplicate_keys
from etl_app.models import DEAD_LETTER_STATUSES, OPEN
from etl_app.ui.blueprint import bp, render
from etl_app.ui.session import requires_operate
from etl_app.web.context import audited, current_key_may_submit, current_runtime, send_replayed

GROUPS_PER_PAGE = 20
DEAD_LETTERS_PER_PAGE = 50
POLL_SECONDS = 5
MAX_POLLED = groups.MAX_LIMIT
STATUSES = (*DEAD_LETTER_STATUSES, ALL)


def pretty(value: Any) -> str:
    """A payload as indented JSON with sorted keys, as the page shows and diffs it."""
    return orjson.dumps(
        json_safe(value), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    ).decode()


def line_diff(original: Any, edited: Any) -> list[tuple[str, str]]:
    """The two payloads' pretty JSON compared line by line (difflib): ``(kind, line)`` pairs, kind
    ``same``, ``del`` (only in the original) or ``ins`` (only in the edit)."""
    before, after = pretty(original).splitlines(), pretty(edited).splitlines()
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
        if op == "equal":
            out += [("same", line) for line in before[i1:i2]]
            continue
        out += [("del", line) for line in before[i1:i2]]
        out += [("ins", line) for line in after[j1:j2]]
    return out


def hour_labels(start: datetime, n: int) -> list[str]:
    """``HH:00`` of each hour of an arrivals chart, from ``start`` (UTC)."""
    return [(start + timedelta(hours=i)).strftime("%H:00") for i in range(n)]


# -- the groups -----------------------------------------------------------------------------------


def _filters_from(args: dict[str, str]) -> tuple[Filters, dict[str, str]]:
    """The list's filters from the query (empty values are "every"), and the ones given."""
    given = {name: args[name] for name in FILTERS if args.get(name)}
    try:
        return parse_filters(given, current_runtime().registry.names()), given
    except InvalidParameter as exc:
        abort(400, description=f"{exc}.")


def _cursor(raw: str | None) -> tuple[int, str] | None:
    try:
        return groups.parse_cursor(raw or None)
    except InvalidParameter:
        abort(400, description="That page link is not valid; start again from the first page.")


def _group_view(group: dict[str, Any]) -> dict[str, Any]:
    """A group as the list shows it: the sample's payload as text, the hours of its chart."""
    arrivals = group["arrivals"]
    counts = arrivals["counts"]
    return {
        **group,
        "sample_text": pretty(group["sample"]["payload"]),
        "hours": hour_labels(arrivals["from"], len(counts)),
        "last_day": sum(counts),
    }


@bp.get("/dead-letters")
def dead_letters():
    filters, given = _filters_from(request.args)
    cursor = _cursor(request.args.get("cursor"))
    with current_runtime().engine.connect() as conn:
        page = groups.list_groups(conn, filters, limit=GROUPS_PER_PAGE, cursor=cursor)
    shown = [_group_view(group) for group in page.items]
    status_arg = {"status": filters.status} if filters.status != OPEN else {}
    return render(
        "ui/dead_letters.html",
        title="Dead letters",
        active="ui.dead_letters",
        groups=shown,
        given=given,
        record_types=current_runtime().registry.names(),
        error_types=ERROR_TYPES,
        statuses=STATUSES,
        status=filters.status,
        status_arg=status_arg,
        following=url_for("ui.dead_letters", **given, cursor=page.next) if page.next else None,
        first=url_for("ui.dead_letters", **given) if cursor else None,
        poll_url=url_for("ui.dead_letters_json", **given),
        poll_seconds=POLL_SECONDS,
    )


@bp.get("/api/dead-letters")
def dead_letters_json():
    """``{groups: [{id, count, first_seen, last_seen, arrivals}]}`` now, for the groups asked for
    (``?group=`` repeated) under the list's filters: what the list's page refreshes."""
    args = request.args.to_dict()
    args.pop("group", None)
    filters, _ = _filters_from(args)
    keys = request.args.getlist("group")[:MAX_POLLED]
    with current_runtime().engine.connect() as conn:
        found = groups.summaries(conn, filters, keys)
    return jsonify({"groups": [found[key] for key in keys if key in found]})


# -- one group ------------------------------------------------------------------------------------


def _status_of(raw: str | None) -> str:
    status = raw or OPEN
    if status not in STATUSES:
        abort(400, description=f"The status is one of {', '.join(STATUSES)}.")
    return status


def _group_page(group_key: str, *, status: str = OPEN, cursor: int | None = None, **extra: Any):
    with current_runtime().engine.connect() as conn:
        try:
            group = groups.get_group(conn, group_key)
        except GroupNotFound:
            abort(404, description=f"There is no dead-letter group {group_key[:40]!r}.")
        numbers = groups.summaries(conn, Filters(status=status), [group_key]).get(group_key)
        open_numbers = numbers if status == OPEN else groups.summaries(conn, Filters(), [group_key]).get(group_key)
        page = queries.list_dead_letters(
            conn, Filters(status=status, group_key=group_key), limit=DEAD_LETTERS_PER_PAGE, cursor=cursor
        )
    status_arg = {"status": status} if status != OPEN else {}
    return render(
        "ui/dead_letter_group.html",
        title="Dead-letter group",
        active="ui.dead_letters",
        group=group,
        numbers=numbers,
        open_count=open_numbers["count"] if open_numbers else 0,
        status=status,
        statuses=STATUSES,
        dead_letters=page.items,
        following=url_for("ui.dead_letter_group", group=group_key, cursor=page.next, **status_arg)
        if page.next
        else None,
        first=url_for("ui.dead_letter_group", group=group_key, **status_arg) if cursor else None,
        poll_seconds=POLL_SECONDS,
        **extra,
    )


@bp.get("/dead-letters/groups/<group>")
def dead_letter_group(group: str):
    status = _status_of(request.args.get("status"))
    try:
        cursor = parse_int(request.args, "cursor", None, 1, queries.MAX_ID)
    except InvalidParameter:
        abort(400, description="That page link is not valid; start again from the newest.")
    return _group_page(group, status=status, cursor=cursor)


@bp.get("/dead-letters/groups/<group>/replay")
@requires_operate()
def dead_letter_group_replay_confirm(group: str):
    """The replay's first step: how many dead letters it will touch (a dry run), and Confirm."""
    with current_runtime().engine.connect() as conn:
        try:
            done = groups.replay_group(conn, group, dry_run=True)
        except GroupNotFound:
            abort(404, description=f"There is no dead-letter group {group[:40]!r}.")
    return render(
        "ui/dead_letter_group_replay.html",
        title="Replay group",
        active="ui.dead_letters",
        group=done.group,
        count=done.count,
        remaining=done.remaining,
        cap=actions.REPLAY_CAP,
    )


@bp.post("/dead-letters/groups/<group>/replay")
@requires_operate("bulk_replay", lambda group: {"group": group})
def dead_letter_group_replay(group: str):
    try:
        with audited("bulk_replay", {"group": group}) as (conn, entry):
            done = groups.replay_group(conn, group)
            entry.target, entry.count = done.audit_target(), done.count
    except GroupNotFound:
        abort(404, description=f"There is no dead-letter group {group[:40]!r}.")
    send_replayed(done.replayed)
    more = f"; {done.remaining:,} still open (replay again for the next ones)" if done.remaining else ""
    flash(f"Replayed {done.count:,} dead letter{'s' if done.count != 1 else ''}{more}.", "ok")
    return redirect(url_for("ui.dead_letter_group", group=group))


def _reason() -> tuple[str, str | None]:
    """A discard form's reason (:func:`groups.check_reason`, as the API's), and what is wrong
    with it if anything."""
    given = request.form.get("reason", "")
    try:
        return groups.check_reason(given), None
    except InvalidParameter as exc:
        return given, str(exc)


@bp.post("/dead-letters/groups/<group>/discard")
@requires_operate("bulk_discard", lambda group: {"group": group})
def dead_letter_group_discard(group: str):
    reason, refused = _reason()
    if refused:
        return _group_page(group, discard_error=refused, reason=reason), 400
    try:
        with audited("bulk_discard", {"group": group, "reason": reason}) as (conn, entry):
            done = groups.discard_group(conn, group, reason)
            entry.target, entry.count = done.audit_target(reason=reason), done.count
    except GroupNotFound:
        abort(404, description=f"There is no dead-letter group {group[:40]!r}.")
    flash(f"Discarded {done.count:,} dead letter{'s' if done.count != 1 else ''}.", "ok")
    return redirect(url_for("ui.dead_letter_group", group=group))


# -- one dead letter --------------------------------------------------------------------------------


def _lineage_url(record_type: str, key: str | None) -> str | None:
    if not key or "ui.record" not in current_app.view_functions:
        return None
    return url_for("ui.record", type_name=record_type, key=key)


def _dead_letter_page(dead_letter_id: int, *, status: int = 200, **extra: Any):
    with current_runtime().engine.connect() as conn:
        found = queries.get_dead_letter(conn, dead_letter_id, None)
        if found is None:
            abort(404, description=f"There is no dead letter {dead_letter_id}.")
        group_key = conn.execute(
            sa.select(queries.DEAD_LETTERS.c.group_key).where(queries.DEAD_LETTERS.c.id == dead_letter_id)
        ).scalar_one()
    payload_text = pretty(found["payload"])
    shown_edits = [{**edit, "diff": line_diff(edit["original"], edit["edited"])} for edit in found["edits"]]
    page = render(
        "ui/dead_letter.html",
        title=f"Dead letter {dead_letter_id}",
        active="ui.dead_letters",
        dl=found,
        payload_text=payload_text,
        edit_text=extra.pop("edit_text", payload_text),
        edits=shown_edits,
        lineage_url=_lineage_url(found["record_type"], found["natural_key"]),
        group_url=url_for("ui.dead_letter_group", group=group_key),
        editable=found["status"] == OPEN and found["record_status"] == "dead",
        **extra,
    )
    return page, status


@bp.get("/dead-letters/<int:dead_letter_id>")
def dead_letter(dead_letter_id: int):
    return _dead_letter_page(dead_letter_id)


def _refused(exc: DeadLetterError, dead_letter_id: int):
    """A domain refusal as the page says it."""
    if isinstance(exc, NotFound):
        abort(404, description=f"There is no dead letter {dead_letter_id}.")
    if isinstance(exc, NotOpen):
        flash(f"Nothing done: {exc}.", "error")
        return redirect(url_for("ui.dead_letter", dead_letter_id=dead_letter_id))
    raise exc


@bp.post("/dead-letters/<int:dead_letter_id>/replay")
@requires_operate("replay", lambda dead_letter_id: {"dead_letter_id": dead_letter_id})
def dead_letter_replay(dead_letter_id: int):
    try:
        with audited("replay", {"dead_letter_id": dead_letter_id}) as (conn, _):
            replayed = actions.replay(conn, current_runtime().registry, dead_letter_id)
    except (NotFound, NotOpen) as exc:
        return _refused(exc, dead_letter_id)
    send_replayed(replayed)
    flash(f"Replayed (raw record {replayed.raw_ids[0]}); its record page shows whether it lands.", "ok")
    return redirect(url_for("ui.dead_letter", dead_letter_id=dead_letter_id))


@bp.post("/dead-letters/<int:dead_letter_id>/discard")
@requires_operate("discard", lambda dead_letter_id: {"dead_letter_id": dead_letter_id})
def dead_letter_discard(dead_letter_id: int):
    reason, refused = _reason()
    if refused:
        return _dead_letter_page(dead_letter_id, status=400, discard_error=refused)
    try:
        with audited("discard", {"dead_letter_id": dead_letter_id, "reason": reason}) as (conn, _):
            actions.discard(conn, dead_letter_id)
    except (NotFound, NotOpen) as exc:
        return _refused(exc, dead_letter_id)
    flash("Discarded; its record stays dead.", "ok")
    return redirect(url_for("ui.dead_letter", dead_letter_id=dead_letter_id))


@bp.post("/dead-letters/<int:dead_letter_id>/edit")
@requires_operate("edit", lambda dead_letter_id: {"dead_letter_id": dead_letter_id})
def dead_letter_edit(dead_letter_id: int):
    text = request.form.get("payload", "")
    try:
        payload = orjson.loads(text)
        refuse_duplicate_keys(text)
    except (orjson.JSONDecodeError, DuplicateKey, NestedTooDeep) as exc:
        said = f"it has the key {exc.key!r} twice" if isinstance(exc, DuplicateKey) else exc
        message = f"The payload is not valid JSON: {said}. Nothing was changed."
        return _dead_letter_page(dead_letter_id, status=400, edit_text=text, edit_error=message)
    try:
        with audited("edit", {"dead_letter_id": dead_letter_id}) as (conn, entry):
            replayed = edits.edit_and_replay(
                conn,
                current_runtime().registry,
                dead_letter_id,
                payload,
                key_id=entry.key_id,
                may_submit=current_key_may_submit(),
            )
    except InvalidPayload as exc:
        message = "The record type refuses this payload; nothing was changed."
        return _dead_letter_page(
            dead_letter_id, status=422, edit_text=text, edit_error=message, field_errors=_field_errors(exc.errors)
        )
    except KeyChanged as exc:
        message = (
            f"The edit changes the natural key {exc.field} ({exc.before!r} → {exc.after!r}). Your key's role may "
            "correct this record but not turn it into another one: keep the key, or ask a key that may submit "
            "records. Nothing was changed."
        )
        return _dead_letter_page(dead_letter_id, status=403, edit_text=text, edit_error=message)
    except (NotFound, NotOpen) as exc:
        return _refused(exc, dead_letter_id)
    send_replayed(replayed)
    flash(f"Edited and replayed (raw record {replayed.raw_ids[0]}); the edit is kept below.", "ok")
    return redirect(url_for("ui.dead_letter", dead_letter_id=dead_letter_id))


def _field_errors(errors: Any) -> list[tuple[str, str]]:
    """Field errors (``{field: [message, ...]}``, possibly nested) as ``(field, message)`` rows."""
    out: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                walk(f"{prefix}.{name}" if prefix else str(name), inner)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            out.extend((prefix, message) for message in value)
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                walk(f"{prefix}[{index}]", inner)
        else:
            out.append((prefix, str(value)))

    walk("", errors)
    return out
