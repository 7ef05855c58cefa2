"""``GET /api/v1/audit``: the audit trail (etl_app.audit), newest first. Any key with the ``read``
right (reader, operator, admin) may read it: it names keys by key id only.

Filters: ``action`` (replay, bulk_replay, discard, bulk_discard, edit, job_run, breaker_reset), ``key_id`` (a key
id, ``cli`` or ``beat``), ``since`` (ISO 8601, on ``at``); ``limit`` (1..500, default 50) and
``cursor`` (the ``next`` of the previous page; null on the last one).
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, jsonify

from etl_app import audit
from etl_app.api.common import bad_parameter, query_parameters
from etl_app.dead_letters.errors import InvalidParameter
from etl_app.dead_letters.filters import parse_int
from etl_app.web.context import current_runtime

bp = Blueprint("audit", __name__, url_prefix="/api/v1/audit")
PARAMETERS = ("action", "key_id", "since", "limit", "cursor")


@bp.get("")
def list_audit():
    params = query_parameters(PARAMETERS)
    if "\x00" in params.get("key_id", ""):  # PostgreSQL refuses NUL in text: a 400, not a 500
        raise bad_parameter("key_id", "must not contain NUL")
    action = params.get("action") or None
    if action is not None and action not in audit.ACTIONS:
        raise bad_parameter("action", f"must be one of {', '.join(audit.ACTIONS)}")
    since = None
    if params.get("since"):
        try:
            since = datetime.fromisoformat(params["since"])
        except ValueError:
            raise bad_parameter("since", "must be an ISO 8601 timestamp") from None
        since = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    try:
        limit = parse_int(params, "limit", audit.DEFAULT_LIMIT, 1, audit.MAX_LIMIT)
        cursor = parse_int(params, "cursor", None, 1, 2**63 - 1)
    except InvalidParameter as exc:
        raise bad_parameter(exc.name, "must be an integer in range") from None
    with current_runtime().engine.connect() as conn:
        page = audit.list_entries(
            conn, action=action, key_id=params.get("key_id") or None, since=since, limit=limit, cursor=cursor
        )
    return jsonify({"audit": page.items, "next": page.next, "limit": page.limit})
