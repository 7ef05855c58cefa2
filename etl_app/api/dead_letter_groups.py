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

from apispec import APISpec
from flask import Blueprint, jsonify, request

from etl_app.api.common import json_object_or_none
from etl_app.api.dead_letters import api_error
from etl_app.api.errors import error_response
from etl_app.dead_letters import actions, groups
from etl_app.dead_letters.errors import DeadLetterError
from etl_app.dead_letters.filters import parse_filters, parse_flag, parse_int
from etl_app.errors import ERROR_TYPES
from etl_app.web.context import ApiError, audited, current_runtime, send_replayed

bp = Blueprint("dead_letter_groups", __name__, url_prefix="/api/v1/dead-letters/groups")


@bp.errorhandler(DeadLetterError)
def _dead_letter_error(exc: DeadLetterError):
    err = api_error(exc)
    return error_response(err.status, err.error, err.message, **err.extra)


def _body(allowed: tuple[str, ...]) -> dict[str, Any]:
    body = json_object_or_none() or {}
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(
            400, "invalid_body", f"unknown field(s) {', '.join(unknown)}; the body takes {', '.join(allowed)}"
        )
    return body


@bp.get("")
def list_groups():
    params = request.args.to_dict()
    filters = parse_filters(params, current_runtime().registry.names(), extra=("limit", "cursor"))
    limit = parse_int(params, "limit", groups.DEFAULT_LIMIT, 1, groups.MAX_LIMIT)
    cursor = groups.parse_cursor(params.get("cursor"))
    with current_runtime().engine.connect() as conn:
        page = groups.list_groups(conn, filters, limit=limit, cursor=cursor)
    return jsonify({"groups": page.items, "next": page.next, "limit": page.limit})


@bp.post("/<group>/replay")
def replay_group(group: str):
    body = _body(("dry_run", "limit"))
    dry_run = parse_flag(body, "dry_run")
    cap = parse_int(body, "limit", actions.REPLAY_CAP, 1, actions.REPLAY_CAP)
    if dry_run:
        with current_runtime().engine.connect() as conn:
            return jsonify(groups.replay_group(conn, group, dry_run=True, cap=cap).as_dict())
    with audited("bulk_replay", {"group": group}) as (conn, entry):
        done = groups.replay_group(conn, group, cap=cap)
        entry.target, entry.count = done.audit_target(), done.count
    send_replayed(done.replayed)
    return jsonify({**done.as_dict(), "replayed": done.count}), 202


@bp.post("/<group>/discard")
def discard_group(group: str):
    body = _body(("reason", "dry_run"))
    dry_run = parse_flag(body, "dry_run")
    if dry_run:
        with current_runtime().engine.connect() as conn:
            return jsonify(groups.discard_group(conn, group, body.get("reason"), dry_run=True).as_dict())
    reason = groups.check_reason(body.get("reason"))
    with audited("bulk_discard", {"group": group, "reason": reason}) as (conn, entry):
        done = groups.discard_group(conn, group, reason)
        entry.target, entry.count = done.audit_target(reason=reason), done.count
    return jsonify({**done.as_dict(), "discarded": done.count})


# -- the OpenAPI document -----------------------------------------------------------------------


def openapi_paths(spec: APISpec, filters: list[dict]) -> None:
    """The three endpoints in the OpenAPI document (etl_app.api.openapi), with the dead-letter
    list's ``filters``."""
    security, tags = [{"bearer": []}], ["dead-letters"]
    integer, text, moment = {"type": "integer"}, {"type": "string"}, {"type": "string", "format": "date-time"}
    group_id = {"type": "string", "pattern": "^[0-9a-f]{16}$"}
    parts = {
        "id": group_id,
        "record_type": text,
        "error_type": {"type": "string", "enum": list(ERROR_TYPES)},
        "cause": {
            **text,
            "description": "the error message with ids, numbers, moments and quoted values as <n>, <id>, <ts>, '<v>'",
        },
    }
    spec.components.schema("DeadLetterGroupId", {"type": "object", "properties": parts})
    spec.components.schema(
        "DeadLetterGroup",
        {
            "type": "object",
            "properties": {
                **parts,
                "count": integer,
                "first_seen": moment,
                "last_seen": moment,
                "sample": {
                    "type": "object",
                    "description": "the group's newest dead letter",
                    "properties": {"id": integer, "payload": {"description": "its payload"}, "error": text},
                },
                "arrivals": {
                    "type": "object",
                    "description": "dead letters of the group by the hour of their last failure, the last 24 hours "
                    "(`from` is the start of the first hour; the current hour last)",
                    "properties": {
                        "unit": {"type": "string", "enum": ["hour"]},
                        "from": moment,
                        "counts": {"type": "array", "items": integer, "minItems": 24, "maxItems": 24},
                    },
                },
            },
        },
    )
    parameters = [
        *filters,
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": groups.MAX_LIMIT}},
        {
            "name": "cursor",
            "in": "query",
            "description": "the `next` of the previous page",
            "schema": {"type": "string", "pattern": "^[0-9]{1,19}\\.[0-9a-f]{16}$"},
        },
    ]
    spec.path(
        path="/api/v1/dead-letters/groups",
        operations={
            "get": {
                "summary": "Dead letters grouped by record type, error type and cause, most dead letters first; "
                "pass `next` back as `cursor` for the next page",
                "tags": tags,
                "security": security,
                "parameters": parameters,
                "responses": {
                    "200": {
                        "description": "one page of groups",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "groups": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/DeadLetterGroup"},
                                        },
                                        "next": {**text, "nullable": True},
                                        "limit": integer,
                                    },
                                }
                            }
                        },
                    },
                },
            }
        },
    )
    ident = [{"name": "group", "in": "path", "required": True, "schema": group_id}]
    counts = {
        "group": {"$ref": "#/components/schemas/DeadLetterGroupId"},
        "dry_run": {"type": "boolean"},
        "count": {**integer, "description": "dead letters acted on (with dry_run: it would act on)"},
        "remaining": {**integer, "description": "open dead letters of the group left after it"},
    }

    def answer(description: str, **more: dict) -> dict:
        schema = {"type": "object", "properties": {**counts, **more}}
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    def body(properties: dict, required: bool, **more: Any) -> dict:
        schema = {"type": "object", "properties": properties, "additionalProperties": False, **more}
        return {"required": required, "content": {"application/json": {"schema": schema}}}

    error = {"description": "", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    errors = {
        "400": {**error, "description": "a bad body or field"},
        "404": {**error, "description": "no such group"},
        "415": {**error, "description": "wrong Content-Type"},
    }
    flag = {"type": "boolean", "default": False}
    spec.path(
        path="/api/v1/dead-letters/groups/{group}/replay",
        operations={
            "post": {
                "summary": "Replay the open dead letters of a group, at most 10,000 a call (`limit` lowers that)",
                "description": "`dry_run: true` changes nothing and answers 200 with the count it would replay.",
                "tags": tags,
                "security": security,
                "parameters": ident,
                "requestBody": body(
                    {"dry_run": flag, "limit": {"type": "integer", "minimum": 1, "maximum": actions.REPLAY_CAP}},
                    False,
                ),
                "responses": {
                    "200": answer("dry run: how many it would replay"),
                    "202": answer("replayed: back in the pipeline", replayed=integer),
                    **errors,
                },
            }
        },
    )
    spec.path(
        path="/api/v1/dead-letters/groups/{group}/discard",
        operations={
            "post": {
                "summary": "Discard every open dead letter of a group, with a reason (their records stay dead)",
                "description": "`reason` is required but for a dry run; `dry_run: true` changes nothing and "
                "answers with the count it would discard.",
                "tags": tags,
                "security": security,
                "parameters": ident,
                "requestBody": body(
                    {
                        "reason": {
                            "type": "string",
                            "maxLength": groups.MAX_REASON_CHARS,
                            "pattern": "^[^\\x00]*[^\\s\\x00][^\\x00]*$",  # not blank, no NUL
                        },
                        "dry_run": flag,
                    },
                    True,
                    anyOf=[
                        {"required": ["reason"]},
                        {"required": ["dry_run"], "properties": {"dry_run": {"enum": [True]}}},
                    ],
                ),
                "responses": {"200": answer("discarded, or with dry_run counted", discarded=integer), **errors},
            }
        },
    )
