"""``POST /api/v1/{type}/upload``: a file (multipart field ``file``) stored whole, then parsed
by a task in the background (:mod:`etl_app.uploads`).

What the web process does before it answers: Werkzeug spools the part to a temporary file (never
into memory), the format is found from the content first and the name second, the file is
checked as a whole (an empty file, a duplicate column, an unreadable or oversized xlsx or
parquet are refused here with a 4xx and nothing is stored), then the bytes are copied into
PostgreSQL. It answers 202 once they are committed; rows the parser refuses later become
rejections with their row number (``GET /api/v1/ingestions/{id}/rejections``).
"""

from __future__ import annotations

import logging
import uuid

from flask import Blueprint, request

from etl_app import logs
from etl_app.api import idempotency
from etl_app.api.bodies import UploadAccepted
from etl_app.api.common import record_type_or_404, refuse_while_backlog_full
from etl_app.api.spec import BUSY, Context, operation, reply
from etl_app.clock import utcnow
from etl_app.ingest.idempotency import KeyTaken
from etl_app.lineage import openlineage
from etl_app.uploads import flat, formats
from etl_app.uploads.caps import upload_limits
from etl_app.uploads.store import display_name, send_parse, store_upload
from etl_app.web.context import ApiError, current_runtime

bp = Blueprint("uploads", __name__, url_prefix="/api/v1")
log = logging.getLogger(__name__)

MIB = 1024 * 1024
MULTIPART_SLACK = MIB  # the form's own framing around the file
_HEAD_BYTES = 64 * 1024


def _limit() -> int:
    return current_runtime().settings.max_upload_bytes


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"the file is over the upload limit of {limit} bytes ({limit / MIB:g} MiB, ETL_MAX_UPLOAD_BYTES); "
        "split it into smaller files",
    )


def _some_column_is_a_field(record_type, columns: list[str]) -> None:
    """A flat file none of whose columns names a field of the type is the wrong file (or has no
    header row): refused whole, rather than accepted and every row rejected."""
    if not columns:
        return  # json and ndjson: no header
    fields = set(record_type.loader.load_fields)
    if not any(flat.normalise(c) in fields for c in columns if str(c).strip()):
        shown = ", ".join(repr(str(c)) for c in columns[:5]) + (", ..." if len(columns) > 5 else "")
        raise ApiError(
            422,
            "no_known_column",
            f"no column of the file names a field of {record_type.name} (its first row: {shown}); "
            f"the fields are listed at GET /api/v1/record-types",
        )


def _upload(ctx: Context) -> dict:
    name = ctx.record_type.name
    return {
        "summary": f"Upload a file of {name} records ({', '.join(formats.FORMATS)})",
        "description": "Stored, then parsed in the background; rows refused by the parser become "
        "rejections with their row number. Follow it at GET /api/v1/ingestions/{ingestion_id}.",
        "tags": [name],
        "headers": [idempotency.PARAMETER],
        "body": {
            "multipart/form-data": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        "responses": {
            202: ("file stored; parsing", UploadAccepted, idempotency.ANSWER_HEADERS),
            400: f"no file, or a malformed {idempotency.HEADER}",
            404: "unknown record type",
            409: idempotency.ERRORS[409],
            413: "file over the limit",
            415: "not multipart/form-data",
            422: f"a file that is not of the type, or unreadable; or the {idempotency.HEADER} used with another file",
            429: BUSY,
        },
    }


@bp.post("/<record_type:type_name>/upload")
@operation(_upload, each_record_type=True)
def post_upload(type_name: str):
    record_type = record_type_or_404(type_name)
    limit = _limit()
    request.max_content_length = limit + MULTIPART_SLACK  # first: also the drain's measure (api.bodylimit)
    refuse_while_backlog_full()
    if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
        raise _too_large(limit)
    if request.mimetype != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the file as multipart/form-data in the field 'file' (got {request.mimetype or 'none'})",
        )
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(400, "missing_file", "send the file as multipart/form-data in the field 'file'")
    f = upload.stream
    f.seek(0, 2)
    size = f.tell()
    if size > limit:
        raise _too_large(limit)
    key = idempotency.of_upload(upload.filename, upload.mimetype, f)  # None without the header
    if key is not None and (replayed := key.replay_if_stored(utcnow())) is not None:
        return replayed  # the file was stored with this key: not checked, copied or parsed again
    f.seek(0)
    head = f.read(_HEAD_BYTES)
    filename = display_name(upload.filename)
    try:
        fmt, note = formats.detect(head, filename, upload.mimetype)
        columns = formats.preflight(f, fmt, upload_limits(current_runtime().settings))
    except formats.FileRefused as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    _some_column_is_a_field(record_type, columns)
    runtime = current_runtime()
    received_at = utcnow()
    claim, body = None, None
    upload_body = {"filename": filename, "format": fmt, "size": size, "note": note}
    if key is not None:
        claim_id = uuid.uuid4()
        body = idempotency.serialise(UploadAccepted, {"ingestion_id": claim_id, "upload": upload_body})
        claim = key.claim(claim_id, 202, body, received_at)
    try:
        ingestion_id, stored = store_upload(
            runtime.engine, record_type, f, filename=filename, fmt=fmt, note=note, received_at=received_at, claim=claim
        )
    except KeyTaken:
        assert key is not None
        return key.replay()  # another request with this key stored the file first: not stored twice
    logs.bind(ingestion_id=ingestion_id, record_type=record_type.name)
    log.info("upload stored: %s, %s, %d bytes", filename, fmt, stored)
    send_parse(runtime.publisher, ingestion_id, timeout=runtime.settings.publish_timeout_seconds)
    openlineage.started(  # queued for a background thread: never waits, never raises
        runtime.settings,
        {
            "id": ingestion_id,
            "record_type": record_type.name,
            "source": "upload",
            "created_at": received_at,
            "filename": filename,
        },
    )
    if body is not None:
        return idempotency.first_answer(body, 202)
    return reply(UploadAccepted, {"ingestion_id": ingestion_id, "upload": {**upload_body, "size": stored}}, 202)
