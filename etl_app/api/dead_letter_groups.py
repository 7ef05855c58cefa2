"""Dead letters grouped by cause (etl_app.dead_letters.groups): list the groups, replay or discard one.

- ``GET /api/v1/dead-letters/groups``: the filters of the dead-letter list (``record_type``,
  ``error_type``, ``ingestion_id``, ``since``, ``status``: open by default); ``limit`` (1..500,
  default 50) and ``cursor`` (the ``next`` of the previous page). Most dead letters first. Each
  group: ``id``, ``record_type``, ``error_type``, ``cause``, ``count``, ``first_seen``,
  ``last_seen``, ``sample`` ``{id, payload, error}`` and ``arrivals`` ``{unit: hour, from,
  counts}`` (the last 24 hours, oldest first).
- ``POST /api/v1/dead-letters/groups/<group>/replay``: body empty or ``{"dry_run": bool,
  "limit": 1..10000}``; replays the group's open dead letters, at most 10,000 a call, and answers
  202 ``{group, count, replayed, remaining, dry_run: false}``; ``dry_run`` changes nothing and
  answers 200 ``{group, count, remaining, dry_run: true}``.
- ``POST /api/v1/dead-letters/groups/<group>/discard``: body ``{"reason": "...", "dry_run":
  bool}``; discards every open dead letter of the group (their records stay dead) and answers 200
  ``{group, count, discarded, remaining, dry_run: false}``. The reason is required (400
  ``invalid_parameter``) except for a dry run, and goes to the audit trail.

An unknown group is 404; a group whose dead letters are all settled acts on none (count 0).
Replays are audited as ``bulk_replay``, discards as ``bulk_discard``, with target ``{group,
record_type, error_type, cause}`` (and the ``reason``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from marshmallow import Schema, validate

from etl_app.api.bodies import Flag, Int, Text, described
from etl_app.api.bodies_operate import GROUP_ID, GroupAction, GroupDiscarded, GroupPage, GroupReplayed
from etl_app.api.common import json_object_or_none
from etl_app.api.dead_letters import TAGS, api_error, filter_fields, refuse_nulls
from etl_app.api.errors import error_response
from etl_app.api.spec import Context, operation, reply
from etl_app.dead_letters import actions, groups
from etl_app.dead_letters.errors import DeadLetterError
from etl_app.dead_letters.filters import parse_filters, parse_flag, parse_int
from etl_app.web.context import ApiError, audited, current_runtime, send_replayed

bp = Blueprint("dead_letter_groups", __name__, url_prefix="/api/v1/dead-letters/groups")


@bp.errorhandler(DeadLetterError)
def _dead_letter_error(exc: DeadLetterError):
    err = api_error(exc)
    return error_response(err.status, err.error, err.message, **err.extra)


def _body(allowed: tuple[str, ...]) -> dict[str, Any]:
    body = json_object_or_none() or {}
    refuse_nulls(body, ("limit", "reason"))
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(
            400, "invalid_body", f"unknown field(s) {', '.join(unknown)}; the body takes {', '.join(allowed)}"
        )
    return body


GROUP = {"group": Text(validate=validate.Regexp(GROUP_ID))}
ERRORS = {400: "a bad body or field", 404: "no such group", 415: "wrong Content-Type"}


def _listing(ctx: Context) -> dict[str, Any]:
    paging = {
        "limit": Int(validate=validate.Range(1, groups.MAX_LIMIT)),
        "cursor": Text(
            validate=validate.Regexp("^[0-9]{1,19}\\.[0-9a-f]{16}$"), **described("the `next` of the previous page")
        ),
    }
    return {
        "summary": "Dead letters grouped by record type, error type and cause, most dead letters first; pass "
        "`next` back as `cursor` for the next page",
        "tags": TAGS,
        "query": Schema.from_dict({**filter_fields(ctx), **paging}, name="GroupQuery"),
        "responses": {200: ("one page of groups", GroupPage)},
    }


class GroupReplayBody(Schema):
    dry_run = Flag(load_default=False)
    limit = Int(validate=validate.Range(1, actions.REPLAY_CAP))


class GroupDiscardBody(Schema):
    reason = Text(validate=[validate.Length(max=groups.MAX_REASON_CHARS), validate.Regexp(groups.REASON_PATTERN)])
    dry_run = Flag(load_default=False)


@bp.get("")
@operation(_listing)
def list_groups():
    params = request.args.to_dict()
    filters = parse_filters(params, current_runtime().registry.names(), extra=("limit", "cursor"))
    limit = parse_int(params, "limit", groups.DEFAULT_LIMIT, 1, groups.MAX_LIMIT)
    cursor = groups.parse_cursor(params.get("cursor"))
    with current_runtime().engine.connect() as conn:
        page = groups.list_groups(conn, filters, limit=limit, cursor=cursor)
    return reply(GroupPage, {"groups": page.items, "next": page.next, "limit": page.limit})


@bp.post("/<group>/replay")
@operation(
    summary="Replay the open dead letters of a group, at most 10,000 a call (`limit` lowers that)",
    description="`dry_run: true` changes nothing and answers 200 with the count it would replay.",
    tags=TAGS,
    path=GROUP,
    body=GroupReplayBody,
    body_required=False,
    responses={
        200: ("dry run: how many it would replay", GroupAction),
        202: ("replayed: back in the pipeline", GroupReplayed),
        **ERRORS,
    },
)
def replay_group(group: str):
    body = _body(("dry_run", "limit"))
    dry_run = parse_flag(body, "dry_run", json_body=True)
    cap = parse_int(body, "limit", actions.REPLAY_CAP, 1, actions.REPLAY_CAP, json_body=True)
    if dry_run:
        with current_runtime().engine.connect() as conn:
            return reply(GroupAction, groups.replay_group(conn, group, dry_run=True, cap=cap).as_dict())
    with audited("bulk_replay", {"group": group}) as (conn, entry):
        done = groups.replay_group(conn, group, cap=cap)
        entry.target, entry.count = done.audit_target(), done.count
    send_replayed(done.replayed)
    return reply(GroupReplayed, {**done.as_dict(), "replayed": done.count}, 202)


@bp.post("/<group>/discard")
@operation(
    summary="Discard every open dead letter of a group, with a reason (their records stay dead)",
    description="`reason` is required but for a dry run; `dry_run: true` changes nothing and answers with the "
    "count it would discard.",
    tags=TAGS,
    path=GROUP,
    body=GroupDiscardBody,
    body_rules={
        "anyOf": [{"required": ["reason"]}, {"required": ["dry_run"], "properties": {"dry_run": {"enum": [True]}}}]
    },
    responses={200: ("discarded, or with dry_run counted", GroupDiscarded), **ERRORS},
)
def discard_group(group: str):
    body = _body(("reason", "dry_run"))
    dry_run = parse_flag(body, "dry_run", json_body=True)
    if dry_run:
        with current_runtime().engine.connect() as conn:
            return reply(GroupAction, groups.discard_group(conn, group, body.get("reason"), dry_run=True).as_dict())
    reason = groups.check_reason(body.get("reason"))
    with audited("bulk_discard", {"group": group, "reason": reason}) as (conn, entry):
        done = groups.discard_group(conn, group, reason)
        entry.target, entry.count = done.audit_target(reason=reason), done.count
    return reply(GroupDiscarded, {**done.as_dict(), "discarded": done.count})
