"""Dead-letter endpoints: list, show, replay (one, optionally corrected, or in bulk) and discard.

- ``GET /api/v1/dead-letters``: filters ``record_type``, ``error_type``, ``ingestion_id``,
  ``since`` (ISO 8601, on ``last_failed_at``), ``status`` (open (default), replayed, superseded,
  discarded, all); ``limit`` (1..500, default 50) and ``cursor``. Newest first; ``next`` is the
  cursor of the following page, null on the last one.
- ``GET /api/v1/dead-letters/<id>``: one, with payload, traceback and ``edits`` (``[{at, key_id,
  original, edited}]``: its corrected replays, oldest first). A replayed record that
  settled without landing (a later record of its key is stored) makes it ``superseded``, with
  ``superseded_by: {raw_record_id, ingestion_id}`` naming that record (null otherwise).
- ``POST /api/v1/dead-letters/<id>/replay``: body empty, or ``{"payload": {...}}`` to replay a
  corrected record (validated again: 422 with field errors when invalid). 409 unless open. A
  corrected replay keeps the payload as it was, the edit and the key id (etl_app.dead_letters.edits).
  It must keep the natural key (the record type's key field) unless the key has the submit right:
  403 ``natural_key_locked`` otherwise, nothing changed.
- ``POST /api/v1/dead-letters/replay``: the same filters, as a JSON object body or as query
  parameters; replays at most 10,000 open dead letters a call (``limit`` lowers that) and says
  how many matching ones are still open (``remaining``): call again until it is 0. It needs a
  filter, or ``"all": true`` for every open dead letter; an empty filter value is refused (400
  ``filter_required``). ``"dry_run": true`` changes nothing and answers 200
  ``{"dry_run": true, "would_replay": N, "remaining": M}``.
- ``POST /api/v1/dead-letters/<id>/discard`` (or ``DELETE /api/v1/dead-letters/<id>``): the dead
  letter is closed without replay; its raw record stays dead. Discarding twice is harmless.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from marshmallow import Schema, fields, validate

from etl_app.api.bodies import Flag, Int, Obj, Text, Uuid, described, one_of
from etl_app.api.bodies_operate import BulkDryRun, BulkReplayed, DeadLetter, DeadLetterPage, Discarded, Replayed
from etl_app.api.common import json_object_of, json_object_or_none
from etl_app.api.errors import error_response
from etl_app.api.spec import Context, operation, reply
from etl_app.dead_letters import actions, edits, groups, queries
from etl_app.dead_letters.errors import (
    DeadLetterError,
    FilterRequired,
    InvalidParameter,
    InvalidPayload,
    KeyChanged,
    NotFound,
    NotOpen,
)
from etl_app.dead_letters.filters import (
    BULK_FLAGS,
    MOMENT_PATTERN,
    parse_filters,
    parse_flag,
    parse_int,
    refuse_empty_filters,
    require_filter,
)
from etl_app.errors import ERROR_TYPES
from etl_app.models import DEAD_LETTER_STATUSES
from etl_app.web.context import ApiError, audited, current_key_may_submit, current_runtime, send_replayed

bp = Blueprint("dead_letters", __name__, url_prefix="/api/v1/dead-letters")


def refuse_nulls(body: dict[str, Any] | None, names: tuple[str, ...]) -> None:
    """These fields of a JSON body are given or left out: null is not a value of theirs (400)."""
    for name in names:
        if name in (body or {}) and body[name] is None:
            raise ApiError(400, "invalid_parameter", f"{name} is null: give it a value or leave it out", parameter=name)


def api_error(exc: DeadLetterError) -> ApiError:
    """The HTTP answer for a dead-letter domain error."""
    if isinstance(exc, InvalidParameter):
        return ApiError(400, "invalid_parameter", str(exc), parameter=exc.name)
    if isinstance(exc, FilterRequired):
        return ApiError(400, "filter_required", str(exc), parameter=exc.name)
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, NotOpen):
        return ApiError(409, "not_open", str(exc), current_status=exc.status)
    if isinstance(exc, KeyChanged):
        return ApiError(403, "natural_key_locked", str(exc), field=exc.field)
    if isinstance(exc, InvalidPayload):
        return ApiError(422, "validation_failed", str(exc), errors=exc.errors)
    return ApiError(400, "bad_request", str(exc))


@bp.errorhandler(DeadLetterError)
def _dead_letter_error(exc: DeadLetterError):
    err = api_error(exc)
    return error_response(err.status, err.error, err.message, **err.extra)


TAGS = ["dead-letters"]
MAX_CURSOR = 2**63 - 1


def filter_fields(ctx: Context) -> dict[str, fields.Field]:
    """The query parameters that filter dead letters (etl_app.dead_letters.filters)."""
    return {
        "record_type": one_of(ctx.registry.names()),
        "error_type": one_of(ERROR_TYPES),
        "ingestion_id": Uuid(),
        "since": Text(
            validate=validate.Regexp(MOMENT_PATTERN),
            **described("only dead letters that last failed at or after this moment (ISO 8601; naive means UTC)"),
        ),
        "status": one_of([*DEAD_LETTER_STATUSES, "all"], load_default="open"),
    }


def _listing(ctx: Context) -> dict[str, Any]:
    paging = {
        "limit": Int(validate=validate.Range(1, queries.MAX_LIMIT)),
        "cursor": Int(validate=validate.Range(1, MAX_CURSOR)),
    }
    return {
        "summary": "List dead letters, newest first; pass `next` back as `cursor` for the next page",
        "tags": TAGS,
        "query": Schema.from_dict({**filter_fields(ctx), **paging}, name="DeadLetterQuery"),
        "responses": {200: ("one page, newest first", DeadLetterPage), 400: "a bad query parameter"},
    }


@bp.get("")
@operation(_listing)
def list_dead_letters():
    params = request.args.to_dict()
    filters = parse_filters(params, current_runtime().registry.names(), extra=("limit", "cursor"))
    limit = parse_int(params, "limit", queries.DEFAULT_LIMIT, 1, queries.MAX_LIMIT)
    cursor = parse_int(params, "cursor", None, 1, 2**63 - 1)
    with current_runtime().engine.connect() as conn:
        page = queries.list_dead_letters(conn, filters, limit=limit, cursor=cursor)
    return reply(DeadLetterPage, {"dead_letters": page.items, "next": page.next, "limit": page.limit})


@bp.get("/<int:dead_letter_id>")
@operation(
    summary="One dead letter: payload, error, last 20 traceback lines, attempts, record_status, and for a "
    "superseded one the stored record that kept its key",
    tags=TAGS,
    responses={200: ("the dead letter", DeadLetter), 404: "no such dead letter"},
)
def get_dead_letter(dead_letter_id: int):
    with current_runtime().engine.connect() as conn:
        found = queries.get_dead_letter(conn, dead_letter_id)
    if found is None:
        raise NotFound(dead_letter_id)
    return reply(DeadLetter, found)


class CorrectedPayload(Schema):
    payload = Obj(**described("the corrected record, validated again as a record of the dead letter's type"))


@bp.post("/<int:dead_letter_id>/replay")
@operation(
    summary="Replay one open dead letter, optionally with a corrected payload (validated again)",
    tags=TAGS,
    body=CorrectedPayload,
    body_required=False,
    responses={
        202: ("back in the pipeline", Replayed),
        400: "a bad body",
        404: "no such dead letter",
        403: "`natural_key_locked`: the corrected payload changes the natural key, and the key lacks the submit right",
        409: "not open",
        415: "wrong Content-Type",
        422: "the corrected payload is not valid",
    },
)
def replay_one(dead_letter_id: int):
    body = json_object_of(["payload"], '{"payload": {...}}')
    runtime = current_runtime()
    if "payload" in body:  # an edit: replayed with a corrected payload, kept with the original
        with audited("edit", {"dead_letter_id": dead_letter_id}) as (conn, entry):
            replayed = edits.edit_and_replay(
                conn,
                runtime.registry,
                dead_letter_id,
                body["payload"],
                key_id=entry.key_id,
                may_submit=current_key_may_submit(),
            )
    else:
        with audited("replay", {"dead_letter_id": dead_letter_id}) as (conn, _):
            replayed = actions.replay(conn, runtime.registry, dead_letter_id)
    send_replayed(replayed)
    answer = {"replayed": 1, "dead_letter_id": dead_letter_id, "raw_record_id": replayed.raw_ids[0]}
    return reply(Replayed, answer, 202)


NARROWING = ("record_type", "error_type", "ingestion_id", "since")


def _bulk(ctx: Context) -> dict[str, Any]:
    filters = filter_fields(ctx)
    body = {
        **{name: filters[name] for name in NARROWING},
        "limit": Int(validate=validate.Range(1, actions.REPLAY_CAP)),
        "all": Flag(load_default=False),
        "dry_run": Flag(load_default=False),
    }
    return {
        "summary": "Replay open dead letters matching the filters (JSON body or query), at most 10,000 a call",
        "description": "Needs a filter, or `all: true` for every open dead letter; an empty filter value or no "
        "filter is 400 `filter_required` (`parameter` names the empty one), an unknown parameter 400 "
        "`invalid_parameter`. `dry_run: true` changes nothing and answers 200 with the counts. The server also "
        "reads the filters from the query string (for curl), never both at once.",
        "tags": TAGS,
        "body": Schema.from_dict(body, name="BulkReplayBody"),
        "body_in_query": True,
        "body_rules": {
            "anyOf": [
                *({"required": [name]} for name in NARROWING),
                {"required": ["all"], "properties": {"all": {"enum": [True]}}},
            ]
        },
        "responses": {
            200: ("dry run: how many it would replay, and how many matching ones would stay open", BulkDryRun),
            202: ("`remaining`: matching dead letters still open", BulkReplayed),
            400: "no filter, or a bad one",
            415: "wrong Content-Type",
        },
    }


@bp.post("/replay")
@operation(_bulk)
def replay_bulk():
    body = json_object_or_none()
    refuse_nulls(body, ("limit",))  # a null filter is an empty one (refuse_empty_filters)
    query = request.args.to_dict()
    if body is not None and query:
        raise ApiError(400, "invalid_parameter", "give the filters either as a JSON body or as query parameters")
    params = body if body is not None else query
    runtime = current_runtime()
    refuse_empty_filters(params)
    filters = parse_filters(params, runtime.registry.names(), extra=("limit", *BULK_FLAGS))
    json_body = body is not None
    cap = parse_int(params, "limit", actions.REPLAY_CAP, 1, actions.REPLAY_CAP, json_body=json_body)
    require_filter(params, everything=parse_flag(params, "all", json_body=json_body))
    if parse_flag(params, "dry_run", json_body=json_body):
        with runtime.engine.connect() as conn:
            would, remaining = actions.count_replayable(conn, filters, cap=cap)
        return reply(BulkDryRun, {"dry_run": True, "would_replay": would, "remaining": remaining})
    with audited("bulk_replay", {"filters": params}) as (conn, entry):
        replayed, remaining = actions.replay_matching(conn, filters, cap=cap)
        entry.count = replayed.count
    send_replayed(replayed)
    return reply(BulkReplayed, {"replayed": replayed.count, "remaining": remaining}, 202)


class DiscardBody(Schema):
    reason = Text(
        validate=[validate.Length(max=groups.MAX_REASON_CHARS), validate.Regexp(groups.REASON_PATTERN)],
        **described("why, for the audit trail (optional)"),
    )


@bp.post("/<int:dead_letter_id>/discard")
@bp.delete("/<int:dead_letter_id>")
@operation(
    summary="Discard an open dead letter: no replay, its record stays dead; idempotent (POST .../discard and "
    "DELETE /api/v1/dead-letters/{id} alike)",
    description="The body is empty or `{reason}`: at most 1,000 characters, kept in the audit trail.",
    tags=TAGS,
    body=DiscardBody,
    body_required=False,
    responses={
        200: ("discarded", Discarded),
        400: "a bad body",
        404: "no such dead letter",
        409: "replayed or superseded",
        415: "wrong Content-Type",
    },
)
def discard(dead_letter_id: int):
    body = json_object_of(["reason"], '{"reason": "..."}')
    target: dict[str, Any] = {"dead_letter_id": dead_letter_id}
    if "reason" in body:
        target["reason"] = groups.check_reason(body["reason"])
    with audited("discard", target) as (conn, _):
        result = actions.discard(conn, dead_letter_id)
    return reply(Discarded, result)
