"""``GET /api/v1/audit``: the audit trail (etl_app.audit), newest first. Any key with the ``read``
right (reader, operator, admin) may read it: it names keys by key id only.

Filters: ``action`` (replay, bulk_replay, discard, bulk_discard, edit, job_run, breaker_reset), ``key_id`` (a key
id, ``cli`` or ``beat``), ``since`` (ISO 8601, on ``at``); ``limit`` (1..500, default 50) and
``cursor`` (the ``next`` of the previous page; null on the last one).
"""

from __future__ import annotations

from flask import Blueprint
from marshmallow import Schema, validate

from etl_app import audit
from etl_app.api.bodies import Int, Text, described, one_of
from etl_app.api.bodies_operate import AuditPage
from etl_app.api.common import bad_parameter, choice_parameter, query_parameters, since_parameter
from etl_app.api.spec import operation, reply
from etl_app.dead_letters.errors import InvalidParameter
from etl_app.dead_letters.filters import MOMENT_PATTERN, parse_int
from etl_app.web.context import current_runtime

bp = Blueprint("audit", __name__, url_prefix="/api/v1/audit")
PARAMETERS = ("action", "key_id", "since", "limit", "cursor")
MAX_KEY_ID = 200


class AuditQuery(Schema):
    action = one_of(audit.ACTIONS)
    key_id = Text(
        validate=[validate.Length(1, MAX_KEY_ID), validate.Regexp("^[^\\x00]+$")],
        **described("a key id, `cli` or `beat`"),
    )
    since = Text(validate=validate.Regexp(MOMENT_PATTERN), **described("ISO 8601; naive means UTC"))
    limit = Int(validate=validate.Range(1, audit.MAX_LIMIT), load_default=audit.DEFAULT_LIMIT)
    cursor = Int(validate=validate.Range(1, 2**63 - 1))


@bp.get("")
@operation(
    summary="The audit trail (replays, edits, discards, job runs), newest first; pass `next` back as `cursor` "
    "for the next page",
    tags=["audit"],
    query=AuditQuery,
    responses={200: ("one page, newest first", AuditPage), 400: "a bad query parameter"},
)
def list_audit():
    params = query_parameters(PARAMETERS)
    if "\x00" in params.get("key_id", ""):  # PostgreSQL refuses NUL in text: a 400, not a 500
        raise bad_parameter("key_id", "must not contain NUL")
    if len(params.get("key_id", "")) > MAX_KEY_ID:
        raise bad_parameter("key_id", f"is longer than {MAX_KEY_ID} characters")
    action = choice_parameter(params, "action", audit.ACTIONS)
    since = since_parameter(params)
    try:
        limit = parse_int(params, "limit", audit.DEFAULT_LIMIT, 1, audit.MAX_LIMIT)
        cursor = parse_int(params, "cursor", None, 1, 2**63 - 1)
    except InvalidParameter as exc:
        raise bad_parameter(exc.name, "must be an integer in range") from None
    with current_runtime().engine.connect() as conn:
        page = audit.list_entries(
            conn, action=action, key_id=params.get("key_id") or None, since=since, limit=limit, cursor=cursor
        )
    return reply(AuditPage, {"audit": page.items, "next": page.next, "limit": page.limit})
