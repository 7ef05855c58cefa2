"""Records waiting for their parents (etl_app.dead_letters.waiting): what waits, and giving up now.

- ``GET /api/v1/waiting`` (``read``): ``{total, groups: [{ingestion_id, record_type, waiting,
  parents, waiting_since}], more}``: the records waiting for a parent now, by ingestion and
  record type, most first (at most 500 groups; ``more`` says there are others); ``ingestion_id``
  narrows it to one ingestion.
- ``POST /api/v1/waiting/give-up`` (``operate``): body ``{"ingestion_id": ...}``, ``{"record_type":
  ...}`` or ``{"record": {"type": ..., "key": ...}}``, exactly one (else 400 ``filter_required``);
  dead-letters those records as ``missing_parent`` now, at most 10,000 a call, and answers 200
  ``{given_up, remaining}``. Audited ``give_up`` with the selector as target.
"""

from __future__ import annotations

from flask import Blueprint, request
from marshmallow import Schema, validate

from etl_app.api.bodies import Text, Uuid, described, nested, one_of
from etl_app.api.bodies_operate import GivenUp, WaitingList
from etl_app.api.common import json_object_or_none
from etl_app.api.dead_letters import api_error
from etl_app.api.errors import error_response
from etl_app.api.spec import Context, operation, reply
from etl_app.dead_letters import waiting
from etl_app.dead_letters.errors import DeadLetterError
from etl_app.web.context import current_runtime
from etl_app.web.waiting import give_up_now, parse

bp = Blueprint("waiting", __name__, url_prefix="/api/v1/waiting")
TAGS = ["waiting"]


@bp.errorhandler(DeadLetterError)
def _selector_error(exc: DeadLetterError):
    err = api_error(exc)
    return error_response(err.status, err.error, err.message, **err.extra)


@bp.get("")
@operation(
    summary="Records waiting for their parents now, counted by ingestion and record type (most first)",
    tags=TAGS,
    query=Schema.from_dict({"ingestion_id": Uuid()}, name="WaitingQuery"),
    responses={200: ("what waits", WaitingList), 400: "a bad query parameter"},
)
def list_waiting():
    params = request.args.to_dict()
    ident = waiting.parse_ingestion_id(params["ingestion_id"]) if "ingestion_id" in params else None
    with current_runtime().engine.connect() as conn:
        found = waiting.list_waiting(conn, ingestion_id=ident)
    return reply(WaitingList, found)


def _give_up(ctx: Context) -> dict:
    record = Schema.from_dict(
        {
            "type": one_of(ctx.registry.names(), required=True),
            "key": Text(
                required=True,
                validate=[validate.Length(1, 1000), validate.Regexp("^[^\\x00]+$")],
                **described("its natural key (no NUL)"),
            ),
        },
        name="WaitingRecord",
    )
    body = {
        "ingestion_id": Uuid(**described("every waiting record of this ingestion")),
        "record_type": one_of(ctx.registry.names(), **described("every waiting record of this type")),
        "record": nested(record, **described("one waiting record")),
    }
    return {
        "summary": "Give up now on records waiting for their parents: dead-letter them as missing_parent "
        "(at most 10,000 a call)",
        "description": "Exactly one of `ingestion_id`, `record_type` and `record`. The dead letters say who gave "
        "up and when; they are not replayed by themselves when the parent lands (replay them then). A record a "
        "chain is storing at that moment lands instead and is not counted.",
        "tags": TAGS,
        "body": Schema.from_dict(body, name="GiveUpBody"),
        "body_rules": {"oneOf": [{"required": [name]} for name in waiting.SELECTORS]},
        "responses": {
            200: ("`given_up`: dead-lettered now; `remaining`: matching records still waiting", GivenUp),
            400: "not exactly one selector, or a bad one",
            415: "wrong Content-Type",
        },
    }


@bp.post("/give-up")
@operation(_give_up)
def give_up():
    body = json_object_or_none() or {}
    given = give_up_now(parse(body))
    return reply(GivenUp, {"given_up": given.count, "remaining": given.remaining})
