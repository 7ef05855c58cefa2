"""Ingest endpoints: one record, or a batch as a JSON array or NDJSON; the converter of a record
type's name in their URLs (and the upload's, etl_app.api.uploads)."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from flask import Blueprint, Response, request
from werkzeug.routing import BaseConverter, Map

from etl_app import logs
from etl_app.api import idempotency, metrics
from etl_app.api.bodies import Accepted
from etl_app.api.common import (
    JSON,
    NDJSON,
    body_or_400,
    parse_json,
    record_type_or_404,
    refuse_while_backlog_full,
    wrong_content_type,
)
from etl_app.api.idempotency import RequestKey
from etl_app.api.spec import BUSY, Context, operation, reply
from etl_app.clock import utcnow
from etl_app.ingest import outbox
from etl_app.ingest.idempotency import KeyTaken
from etl_app.ingest.rejections import Refused, RejectionLimits, public
from etl_app.ingest.relay import goes_through_relay
from etl_app.ingest.send import send_after_commit
from etl_app.jsonsafe import DuplicateKey, NestedTooDeep, refuse_duplicate_keys
from etl_app.lineage import openlineage
from etl_app.pipeline.stash import item
from etl_app.record_types import RecordType
from etl_app.web.context import ApiError, current_runtime

bp = Blueprint("ingest", __name__, url_prefix="/api/v1")
log = logging.getLogger(__name__)


@dataclass
class _Checked:
    """A submission validated: the accepted payloads with their loaded values, and when it came."""

    received_at: datetime
    accepted: list[Any] = field(default_factory=list)
    loaded: list[dict[str, Any]] = field(default_factory=list)


def _validate(
    record_type: RecordType, payloads: list[Any], rejections: list[Refused], indexes: list[int] | None = None
) -> _Checked:
    """Validate each payload; rejections are appended to ``rejections`` with their index in the
    request (``indexes[i]`` when payloads are a subset of the request, as for NDJSON)."""
    checked = _Checked(utcnow())
    for position, payload in enumerate(payloads):
        data, field_errors = record_type.validate(payload, checked.received_at)
        if field_errors:
            index = indexes[position] if indexes is not None else position
            rejections.append({"index": index, "errors": field_errors, "raw": payload})
        else:
            checked.accepted.append(payload)
            checked.loaded.append(data)
    rejections.sort(key=lambda r: r["index"])
    return checked


def _refuse(record_type: RecordType, checked: _Checked, rejections: list[Refused], key: RequestKey | None):
    """Nothing valid: counted as refused, unless the key has a live answer (the same body may
    have been accepted when it was first sent), which is then given again."""
    if key is not None and (replayed := key.replay_if_stored(checked.received_at)) is not None:
        return replayed
    metrics.count_refused(record_type.name, len(rejections))  # no ingestion row counts these
    return None


def _accept(
    record_type: RecordType,
    checked: _Checked,
    *,
    source: str,
    rejections: list[Refused],
    key: RequestKey | None,
    answer: Callable[[uuid.UUID], dict[str, Any]],
    answer_bytes: Callable[[uuid.UUID], bytes] | None = None,
):
    """Store (commit) and publish the accepted records; the 202 answer, ``answer(ingestion id)``.
    With an idempotency key the answer is stored with the records, in their transaction, and a
    key that has an answer already gets that one (nothing stored or sent). ``answer_bytes``: the
    same answer already serialised, sent without a key instead of dumping ``answer`` through its
    schema (for the single record, whose answer is always the same but for its id)."""
    runtime = current_runtime()
    received_at = checked.received_at
    relayed = goes_through_relay(len(checked.accepted), runtime.settings.chunk_size)  # small ones share chains
    claim, body = None, None
    if key is not None:
        ingestion_id = uuid.uuid4()
        body = idempotency.serialise(Accepted, answer(ingestion_id))
        claim = key.claim(ingestion_id, 202, body, received_at)
    try:
        result = outbox.store_and_commit(
            runtime.engine,
            record_type,
            checked.accepted,
            source=source,
            received_at=received_at,
            rejections=rejections,
            rejection_limits=RejectionLimits.of(runtime.settings),
            relayed=relayed,
            claim=claim,
        )
    except KeyTaken:
        assert key is not None
        return key.replay()
    openlineage.started(  # queued for a background thread: never waits, never raises
        runtime.settings,
        {
            "id": result.ingestion_id,
            "record_type": record_type.name,
            "source": source,
            "created_at": received_at,
            "filename": None,
        },
    )
    logs.bind(ingestion_id=result.ingestion_id, record_type=record_type.name)  # until the request ends
    log.info("ingestion stored (%s): %d accepted, %d rejected", source, len(checked.accepted), len(rejections))
    if relayed:
        runtime.relay.notify()
    else:
        ingestion = str(result.ingestion_id)  # once, not once a record (UUID.__str__)
        items = [
            item(raw_id, ingestion, received_at, None, data)
            for raw_id, data in zip(result.ids, checked.loaded, strict=True)
        ]
        send_after_commit(
            runtime.publisher,
            {record_type.name: result.ids},
            items=items,
            timeout=runtime.settings.publish_timeout_seconds,
            what=f"ingestion {result.ingestion_id}",
            relay=runtime.relay,
        )
    if body is not None:
        return idempotency.first_answer(body, 202)
    if answer_bytes is not None:
        return Response(answer_bytes(result.ingestion_id), 202, mimetype=JSON)
    return reply(Accepted, answer(result.ingestion_id), 202)


class RecordTypeName(BaseConverter):
    """``<record_type:...>``: a record type's name in an ingest URL, any name but that of another
    API path of one segment (``/api/v1/audit``), so that such a path's 405 and OPTIONS ``Allow``
    name only its own methods, as the OpenAPI document does. Those paths are the rules already in
    the map: the ingest blueprints are registered after the others (etl_app.api.init_app)."""

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(url_map, *args, **kwargs)
        taken = sorted(
            parts[3]
            for parts in (rule.rule.split("/") for rule in url_map.iter_rules())
            if len(parts) == 4 and parts[:3] == ["", "api", "v1"] and "<" not in parts[3]
        )
        if taken:
            self.regex = rf"(?!(?:{'|'.join(map(re.escape, taken))})\Z)[^/]+"


ERRORS = {
    400: idempotency.ERRORS[400],
    404: "unknown record type",
    409: idempotency.ERRORS[409],
    413: "body or batch over the limit",
    415: "wrong Content-Type",
    422: idempotency.ERRORS[422],
    429: BUSY,
}


def _one(ctx: Context) -> dict[str, Any]:
    name = ctx.record_type.name
    return {
        "summary": f"Submit one {name} record",
        "tags": [name],
        "headers": [idempotency.PARAMETER],
        "body": ctx.record_type.schema,
        "responses": {202: ("stored; processing", Accepted, idempotency.ANSWER_HEADERS), **ERRORS},
    }


def _batch(ctx: Context) -> dict[str, Any]:
    name, schema = ctx.record_type.name, ctx.record_type.schema
    return {
        "summary": f"Submit a batch of {name} records (JSON array or NDJSON)",
        "tags": [name],
        "headers": [idempotency.PARAMETER],
        "body": {
            JSON: {"type": "array", "items": {"$ref": f"#/components/schemas/{schema.__name__}"}, "minItems": 1},
            NDJSON[0]: {"type": "string"},
        },
        "responses": {
            202: ("valid records stored; the others rejected one by one", Accepted, idempotency.ANSWER_HEADERS),
            **ERRORS,
        },
    }


def _refuse_or_replay_while_backlog_full() -> Response | None:
    """:func:`refuse_while_backlog_full`, except for a retry: a request with an idempotency key
    whose answer is stored gets that answer again (its records were taken before the backlog
    filled; a client retrying after a lost answer must not be told to wait for what it has).
    Only then is the body read before the 429."""
    try:
        refuse_while_backlog_full()
    except ApiError as refused:
        if request.headers.get(idempotency.HEADER) is None:
            raise
        try:
            key = idempotency.of_body(body_or_400())
        except ApiError:
            raise refused from None
        replayed = None if key is None else key.replay_if_stored(utcnow())
        if replayed is None:
            raise
        return replayed
    return None


@bp.post("/<record_type:type_name>")
@operation(_one, each_record_type=True)
def post_one(type_name: str):
    record_type = record_type_or_404(type_name)
    if (replayed := _refuse_or_replay_while_backlog_full()) is not None:
        return replayed
    if request.mimetype != JSON:
        raise wrong_content_type(JSON)
    body = body_or_400()
    key = idempotency.of_body(body)
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_body", "the body must be one JSON object; send arrays to .../batch")
    rejections: list[Refused] = []
    checked = _validate(record_type, [payload], rejections)
    if not checked.accepted:
        replayed = _refuse(record_type, checked, rejections, key)
        if replayed is not None:
            return replayed
        raise ApiError(422, "validation_failed", "the record is not valid", errors=rejections[0]["errors"])
    return _accept(
        record_type,
        checked,
        source="api",
        rejections=rejections,
        key=key,
        answer=lambda ingestion_id: {"ingestion_id": ingestion_id, "accepted": 1, "rejected": 0},
        answer_bytes=_one_accepted,
    )


def _one_accepted(ingestion_id: uuid.UUID) -> bytes:
    """The single record's 202 body, as :class:`~etl_app.api.bodies.Accepted` dumps it (a test
    compares them), without the schema's dump and the JSON encoder: about 20 µs a request."""
    return b'{"ingestion_id":"%s","accepted":1,"rejected":0}' % str(ingestion_id).encode()


def _refuse_line(rejections: list[Refused], index: int, line: bytes, message: str) -> None:
    rejections.append({"index": index, "errors": {"_line": [message]}, "raw": line.decode("utf-8", "replace")})


def _ndjson(body: bytes) -> tuple[list[Any], list[Refused], list[int]]:
    """Lines of NDJSON; blank lines are skipped, a bad line is a rejection with its index."""
    payloads, rejections, indexes = [], [], []
    index = 0
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            payload = orjson.loads(line)
            refuse_duplicate_keys(line, payload)
        except orjson.JSONDecodeError as exc:
            _refuse_line(rejections, index, line, f"not valid JSON: {exc}")
        except DuplicateKey as exc:
            _refuse_line(rejections, index, line, f"has the key {exc.key!r} twice in one object")
        except NestedTooDeep as exc:
            _refuse_line(rejections, index, line, str(exc))
        else:
            payloads.append(payload)
            indexes.append(index)
        index += 1
    return payloads, rejections, indexes


@bp.post("/<record_type:type_name>/batch")
@operation(_batch, each_record_type=True)
def post_batch(type_name: str):
    record_type = record_type_or_404(type_name)
    if (replayed := _refuse_or_replay_while_backlog_full()) is not None:
        return replayed
    limit = current_runtime().settings.max_batch_items
    if request.mimetype != JSON and request.mimetype not in NDJSON:
        raise wrong_content_type(f"{JSON} or application/x-ndjson")
    body = body_or_400()
    key = idempotency.of_body(body)
    if request.mimetype == JSON:
        payloads = parse_json(body)
        if not isinstance(payloads, list):
            raise ApiError(400, "invalid_body", "a batch must be a JSON array of objects (or NDJSON)")
        rejections: list[Refused] = []
        indexes = None
        source = "batch"
    else:
        payloads, rejections, indexes = _ndjson(body)
        source = "ndjson"
    if len(payloads) + len(rejections) > limit:
        raise ApiError(413, "too_many_records", f"a batch holds at most {limit} records; split it")
    if not payloads and not rejections:
        raise ApiError(422, "empty_batch", "the batch holds no records", errors=[])
    checked = _validate(record_type, payloads, rejections, indexes)
    if not checked.accepted:
        replayed = _refuse(record_type, checked, rejections, key)
        if replayed is not None:
            return replayed
        raise ApiError(
            422,
            "validation_failed",
            "no record in the batch is valid",
            accepted=0,
            rejected=len(rejections),
            errors=public(rejections),
        )
    return _accept(
        record_type,
        checked,
        source=source,
        rejections=rejections,
        key=key,
        answer=lambda ingestion_id: {
            "ingestion_id": ingestion_id,
            "accepted": len(checked.accepted),
            "rejected": len(rejections),
            "errors": public(rejections),
        },
    )
