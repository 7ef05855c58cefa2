"""``POST /api/v1/_noop``: the web tier's own ceiling, for ``make bench`` (registered only with
``ETL_BENCH_NOOP=1``; left out of the OpenAPI document).

A request passes everything a submit passes before and after its view (the body limits and
deadlines, metrics, the API key, the rate limit, the ``submit`` right, the request log), and the
view reads and parses the JSON body as a submit's does (the same 415 and 400 answers); then it
answers 202 ``{"accepted": 1, "rejected": 0}`` without validating, storing or publishing
anything. The benchmark posts the single-record phase's bodies to it with the same clients, so
the single-record path can be stated as a fraction of what the server can answer at all.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from etl_app.api.common import JSON, body_or_400, parse_json, wrong_content_type
from etl_app.web.context import ApiError

bp = Blueprint("noop", __name__, url_prefix="/api/v1")
ENDPOINT = "noop.noop"
_ANSWER = b'{"accepted":1,"rejected":0}'


@bp.post("/_noop")
def noop() -> Response:
    if request.mimetype != JSON:
        raise wrong_content_type(JSON)
    if not isinstance(parse_json(body_or_400()), dict):
        raise ApiError(400, "invalid_body", "the body must be one JSON object")
    return Response(_ANSWER, 202, mimetype=JSON)
