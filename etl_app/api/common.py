"""What the blueprints share: the runtime, the record type of a URL, JSON bodies, the 415."""

from __future__ import annotations

from typing import Any

import orjson
from flask import current_app, request

from etl_app.api.errors import ApiError
from etl_app.record_types import RecordType
from etl_app.runtime import Runtime

JSON = "application/json"
NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl")


def current_runtime() -> Runtime:
    """The runtime of the app handling this request."""
    return current_app.extensions["etl"]


def record_type_or_404(name: str) -> RecordType:
    record_type = current_runtime().registry.get(name)
    if record_type is None:
        raise ApiError(404, "unknown_record_type", f"no record type {name!r}; see GET /api/v1/record-types")
    return record_type


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def wrong_content_type(expected: str) -> ApiError:
    """The 415 answer for a body that is not of the ``expected`` media type."""
    return ApiError(
        415, "unsupported_media_type", f"Content-Type must be {expected} (got {request.mimetype or 'none'})"
    )


def body_or_400() -> bytes:
    body = request.get_data(cache=False)
    if not body.strip():
        raise ApiError(400, "empty_body", "the request body is empty")
    return body


def json_object_or_none() -> dict[str, Any] | None:
    """The request's JSON object body, or None when the body is empty."""
    body = request.get_data(cache=False)
    if not body.strip():
        return None
    if request.mimetype != JSON:
        raise wrong_content_type(JSON)
    value = parse_json(body)
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return value
