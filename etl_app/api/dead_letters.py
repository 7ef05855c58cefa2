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

from flask import Blueprint, jsonify, request

from etl_app.api.common import json_object_or_none
from etl_app.api.errors import error_response
from etl_app.dead_letters import actions, edits, queries
from etl_app.dead_letters.errors import (
    DeadLetterError,
    FilterRequired,
    InvalidParameter,
    InvalidPayload,
    NotFound,
    NotOpen,
)
from etl_app.dead_letters.filters import (
    BULK_FLAGS,
    parse_filters,
    parse_flag,
    parse_int,
    refuse_empty_filters,
    require_filter,
)
from etl_app.web.context import ApiError, audited, current_runtime, send_replayed

bp = Blueprint("dead_letters", __name__, url_prefix="/api/v1/dead-letters")


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
    if isinstance(exc, InvalidPayload):
        return ApiError(422, "validation_failed", str(exc), errors=exc.errors)
    return ApiError(400, "bad_request", str(exc))


@bp.errorhandler(DeadLetterError)
def _dead_letter_error(exc: DeadLetterError):
    err = api_error(exc)
    return error_response(err.status, err.error, err.message, **err.extra)


@bp.get("")
def list_dead_letters():
    params = request.args.to_dict()
    filters = parse_filters(params, current_runtime().registry.names(), extra=("limit", "cursor"))
    limit = parse_int(params, "limit", queries.DEFAULT_LIMIT, 1, queries.MAX_LIMIT)
    cursor = parse_int(params, "cursor", None, 1, 2**63 - 1)
    with current_runtime().engine.connect() as conn:
        page = queries.list_dead_letters(conn, filters, limit=limit, cursor=cursor)
    return jsonify({"dead_letters": page.items, "next": page.next, "limit": page.limit})


@bp.get("/<int:dead_letter_id>")
def get_dead_letter(dead_letter_id: int):
    with current_runtime().engine.connect() as conn:
        found = queries.get_dead_letter(conn, dead_letter_id)
    if found is None:
        raise NotFound(dead_letter_id)
    return jsonify(found)


@bp.post("/<int:dead_letter_id>/replay")
def replay_one(dead_letter_id: int):
    body = json_object_or_none() or {}
    unknown = sorted(set(body) - {"payload"})
    if unknown:
        raise ApiError(
            400, "invalid_body", f'unknown field(s) {", ".join(unknown)}; the body is {{"payload": {{...}}}}'
        )
    runtime = current_runtime()
    if "payload" in body:  # an edit: replayed with a corrected payload, kept with the original
        with audited("edit", {"dead_letter_id": dead_letter_id}) as (conn, entry):
            replayed = edits.edit_and_replay(
                conn, runtime.registry, dead_letter_id, body["payload"], key_id=entry.key_id
            )
    else:
        with audited("replay", {"dead_letter_id": dead_letter_id}) as (conn, _):
            replayed = actions.replay(conn, runtime.registry, dead_letter_id)
    send_replayed(replayed)
    return jsonify({"replayed": 1, "dead_letter_id": dead_letter_id, "raw_record_id": replayed.raw_ids[0]}), 202


@bp.post("/replay")
def replay_bulk():
    body = json_object_or_none()
    query = request.args.to_dict()
    if body is not None and query:
        raise ApiError(400, "invalid_parameter", "give the filters either as a JSON body or as query parameters")
    params = body if body is not None else query
    runtime = current_runtime()
    refuse_empty_filters(params)
    filters = parse_filters(params, runtime.registry.names(), extra=("limit", *BULK_FLAGS))
    cap = parse_int(params, "limit", actions.REPLAY_CAP, 1, actions.REPLAY_CAP)
    require_filter(params, everything=parse_flag(params, "all"))
    if parse_flag(params, "dry_run"):
        with runtime.engine.connect() as conn:
            would, remaining = actions.count_replayable(conn, filters, cap=cap)
        return jsonify({"dry_run": True, "would_replay": would, "remaining": remaining})
    with audited("bulk_replay", {"filters": params}) as (conn, entry):
        replayed, remaining = actions.replay_matching(conn, filters, cap=cap)
        entry.count = replayed.count
    send_replayed(replayed)
    return jsonify({"replayed": replayed.count, "remaining": remaining}), 202


@bp.post("/<int:dead_letter_id>/discard")
@bp.delete("/<int:dead_letter_id>")
def discard(dead_letter_id: int):
    with audited("discard", {"dead_letter_id": dead_letter_id}) as (conn, _):
        result = actions.discard(conn, dead_letter_id)
    return jsonify(result)
