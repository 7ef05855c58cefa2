"""What the blueprints share: the runtime, the record type of a URL, the backlog's 429, JSON
bodies, the 415, the checks of query parameters."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from flask import request

from etl_app.dead_letters.filters import parse_moment
from etl_app.jsonsafe import DuplicateKey, NestedTooDeep, refuse_duplicate_keys
from etl_app.record_types import RecordType
from etl_app.web.context import ApiError, current_runtime

JSON = "application/json"
NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl")


def record_type_or_404(name: str) -> RecordType:
    record_type = current_runtime().registry.get(name)
    if record_type is None:
        raise ApiError(404, "unknown_record_type", f"no record type {name!r}; see GET /api/v1/record-types")
    return record_type


def refuse_while_backlog_full() -> None:
    """429 ``backlog_full`` with ``Retry-After`` while the backlog of unsettled records is over a
    bound (:mod:`etl_app.ingest.backlog`); the submit and upload endpoints call it before reading
    the body. It reads this process's last reading of the backlog: no query of its own."""
    backlog = current_runtime().backlog.read()
    if backlog is None or not backlog.full:
        return
    numbers = backlog.as_dict()
    raise ApiError(
        429,
        "backlog_full",
        backlog.message(),
        headers={"Retry-After": str(backlog.retry_after)},
        backlog={k: numbers[k] for k in ("records", "oldest_seconds", "settled_per_second", "reasons")},
        bound={"records": numbers["max_records"], "age_seconds": numbers["max_age_seconds"]},
        retry_after=backlog.retry_after,
    )


def parse_json(body: bytes | str, what: str = "the body") -> Any:
    """``body`` parsed (orjson); a 400 ``invalid_json`` for invalid JSON, an object with a
    duplicate key (``key`` names it) or nesting too deep to check for one."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"{what} is not valid JSON: {exc}") from None
    try:
        refuse_duplicate_keys(body, value)
    except DuplicateKey as exc:
        raise ApiError(
            400, "invalid_json", f"{what} has the key {exc.key!r} twice in one object", key=exc.key
        ) from None
    except NestedTooDeep as exc:
        raise ApiError(400, "invalid_json", f"{what}: {exc}") from None
    return value


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


def json_object_of(allowed: Sequence[str], shape: str) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty), naming no field but ``allowed``: else a
    400 ``invalid_body`` that says the body is ``shape``."""
    body = json_object_or_none() or {}
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown field(s) {', '.join(unknown)}; the body is {shape}")
    return body


def bad_parameter(name: str, message: str) -> ApiError:
    """The 400 for one query parameter: ``{error: invalid_parameter, message: "<name> <message>", parameter}``."""
    return ApiError(400, "invalid_parameter", f"{name} {message}", parameter=name)


def query_parameters(allowed: Sequence[str]) -> dict[str, str]:
    """The request's query parameters, each named in ``allowed`` and none empty (else a 400)."""
    params = request.args.to_dict()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise bad_parameter(unknown[0], f"is not a parameter; they are {', '.join(allowed)}")
    empty = sorted(name for name, value in params.items() if value == "")
    if empty:
        raise bad_parameter(empty[0], "is empty: give it a value or leave it out")
    return params


def choice_parameter(params: Mapping[str, str], name: str, values: Collection[str]) -> str | None:
    """The query parameter ``name``, one of ``values`` (else a 400 naming them); None when absent."""
    value = params.get(name)
    if value is not None and value not in values:
        raise bad_parameter(name, f"must be one of {', '.join(values)}")
    return value


def since_parameter(params: Mapping[str, str]) -> datetime | None:
    """The ``since`` query parameter as an aware moment (ISO 8601, naive means UTC); None when absent."""
    if not params.get("since"):
        return None
    try:
        return parse_moment(params["since"])
    except ValueError:
        raise bad_parameter("since", "must be an ISO 8601 timestamp") from None
