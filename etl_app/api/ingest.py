"""Ingest endpoints: one record, or a batch as a JSON array or NDJSON."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, current_app, jsonify, request

from etl_app.api import metrics
from etl_app.api.errors import ApiError
from etl_app.clock import utcnow
from etl_app.ingest import outbox, send
from etl_app.record_types import RecordType
from etl_app.runtime import Runtime

bp = Blueprint("ingest", __name__, url_prefix="/api/v1")

JSON = "application/json"
NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl")


def _runtime() -> Runtime:
    return current_app.extensions["etl"]


def record_type_or_404(name: str) -> RecordType:
    rt = _runtime().registry.get(name)
    if rt is None:
        raise ApiError(404, "unknown_record_type", f"no record type {name!r}; see GET /api/v1/record-types")
    return rt


def _body() -> bytes:
    body = request.get_data(cache=False)
    if not body.strip():
        raise ApiError(400, "empty_body", "the request body is empty")
    return body


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _wrong_type(expected: str) -> ApiError:
    return ApiError(
        415, "unsupported_media_type", f"Content-Type must be {expected} (got {request.mimetype or 'none'})"
    )


def _accept(
    rt: RecordType,
    payloads: list[Any],
    *,
    source: str,
    rejections: list[dict[str, Any]],
    indexes: list[int] | None = None,
):
    """Validate, store (commit) and publish; returns the Accepted outcome, or None if nothing
    was valid. Rejections are appended to ``rejections`` with their index in the request
    (``indexes[i]`` when payloads are a subset of the request, as for NDJSON)."""
    runtime = _runtime()
    received_at = utcnow()
    accepted: list[Any] = []
    loaded: list[dict[str, Any]] = []
    for position, payload in enumerate(payloads):
        data, field_errors = rt.validate(payload, received_at)
        if field_errors:
            index = indexes[position] if indexes is not None else position
            rejections.append({"index": index, "errors": field_errors})
        else:
            accepted.append(payload)
            loaded.append(data)
    rejections.sort(key=lambda r: r["index"])
    metrics.count_records(rt.name, len(accepted), len(rejections))
    if not accepted:
        return None
    s = runtime.settings
    relayed = len(accepted) < s.chunk_size  # small submissions share chains through the relay
    result = outbox.store_and_commit(
        runtime.engine, rt, accepted, source=source, received_at=received_at, rejections=rejections, relayed=relayed
    )
    published = not relayed and send.publish(
        runtime.engine,
        runtime.celery,
        result,
        chunk_size=s.chunk_size,
        timeout=s.publish_timeout_seconds,
        validated=loaded,
        stash=runtime.stash,
    )
    if not published:
        runtime.relay.notify()
    return result


@bp.post("/<record_type>")
def post_one(record_type: str):
    rt = record_type_or_404(record_type)
    if request.mimetype != JSON:
        raise _wrong_type(JSON)
    payload = parse_json(_body())
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_body", "the body must be one JSON object; send arrays to .../batch")
    rejections: list[dict[str, Any]] = []
    result = _accept(rt, [payload], source="api", rejections=rejections)
    if result is None:
        raise ApiError(422, "validation_failed", "the record is not valid", errors=rejections[0]["errors"])
    return jsonify({"ingestion_id": result.ingestion_id, "accepted": 1, "rejected": 0}), 202


def _ndjson(body: bytes) -> tuple[list[Any], list[dict[str, Any]], list[int]]:
    """Lines of NDJSON; blank lines are skipped, a bad line is a rejection with its index."""
    payloads, rejections, indexes = [], [], []
    index = 0
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            payloads.append(orjson.loads(line))
            indexes.append(index)
        except orjson.JSONDecodeError as exc:
            rejections.append({"index": index, "errors": {"_line": [f"not valid JSON: {exc}"]}})
        index += 1
    return payloads, rejections, indexes


@bp.post("/<record_type>/batch")
def post_batch(record_type: str):
    rt = record_type_or_404(record_type)
    limit = _runtime().settings.max_batch_items
    if request.mimetype == JSON:
        payloads = parse_json(_body())
        if not isinstance(payloads, list):
            raise ApiError(400, "invalid_body", "a batch must be a JSON array of objects (or NDJSON)")
        rejections: list[dict[str, Any]] = []
        indexes = None
        source = "batch"
    elif request.mimetype in NDJSON:
        payloads, rejections, indexes = _ndjson(_body())
        source = "ndjson"
    else:
        raise _wrong_type(f"{JSON} or application/x-ndjson")
    if len(payloads) + len(rejections) > limit:
        raise ApiError(413, "too_many_records", f"a batch holds at most {limit} records; split it")
    if not payloads and not rejections:
        raise ApiError(422, "empty_batch", "the batch holds no records", errors=[])
    result = _accept(rt, payloads, source=source, rejections=rejections, indexes=indexes)
    if result is None:
        raise ApiError(
            422,
            "validation_failed",
            "no record in the batch is valid",
            accepted=0,
            rejected=len(rejections),
            errors=rejections,
        )
    return jsonify(
        {
            "ingestion_id": result.ingestion_id,
            "accepted": result.accepted,
            "rejected": len(rejections),
            "errors": rejections,
        }
    ), 202
