"""``GET /api/v1/ingestions/{id}/rejections``: the records an ingestion refused, with their errors.

JSON (default): ``{rejections: [...], next, limit}``, in the order of the input; each item is
``{index, row, natural_key, raw, errors, created_at}`` where ``index`` is the place in an API
batch (from 0) and ``row`` the row of an uploaded file, the other one null; ``raw`` is the
values as received (a line that was not JSON is kept as its text) and ``errors`` is ``{field:
[message]}``. ``limit`` 1..500 (default 50); ``cursor`` is the ``next`` of the previous page
(null on the last).

``?format=csv`` streams every rejection (from ``cursor`` on, at most ``limit`` when given) as a
CSV to fix in a spreadsheet and upload again: one column per input field of the type's schema,
holding the values as received (a list as its items joined with ``;``, an object as JSON,
true/false for booleans, empty for null or absent), then ``_raw``, ``_row`` and ``_errors``
(``field: message; ...``), whose names start with ``_`` so that the upload parser drops them.
``_raw`` is empty unless the values cannot be spread over the columns: a value that is not an
object (a bad NDJSON line: its text) or an object with fields the schema does not have (it as
JSON). ``_row`` is the row of the file, or the index in the batch.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import sqlalchemy as sa
from flask import Blueprint, Response, stream_with_context
from marshmallow import Schema, validate

from etl_app.api.bodies import Int, RejectionPage, Uuid, one_of
from etl_app.api.common import bad_parameter, current_runtime, query_parameters
from etl_app.api.errors import ApiError
from etl_app.api.read import input_fields
from etl_app.api.spec import operation, reply
from etl_app.deadletters.errors import InvalidParameter
from etl_app.deadletters.filters import parse_int
from etl_app.jsonsafe import json_safe
from etl_app.uploads.flat import normalise

bp = Blueprint("rejections", __name__, url_prefix="/api/v1")

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
MAX_CURSOR = 2**63 - 1
FORMATS = ("json", "csv")
PARAMETERS = ("limit", "cursor", "format")
TRAILING_COLUMNS = ("_raw", "_row", "_errors")
STREAM_ROWS = 1000  # rows a round trip of the server-side cursor
FLUSH_BYTES = 64 * 1024

_INGESTION = sa.text(
    "SELECT i.record_type, EXISTS (SELECT 1 FROM uploads u WHERE u.id = i.id) AS upload "
    "FROM ingestions i WHERE i.id = :id"
)
_COLUMNS = "position, natural_key, raw, errors, created_at"
PAGE = sa.text(
    f"SELECT {_COLUMNS} FROM rejections WHERE ingestion_id = :id AND position >= :from ORDER BY position, id LIMIT :n"
)
_ALL = sa.text(
    f"SELECT {_COLUMNS} FROM rejections WHERE ingestion_id = :id AND position >= :from ORDER BY position, id LIMIT :n"
)


def ingestion_or_404(ingestion_id: str) -> tuple[uuid.UUID, sa.Row]:
    try:
        ident = uuid.UUID(ingestion_id)
    except ValueError:
        raise ApiError(404, "not_found", f"no ingestion {ingestion_id!r}") from None
    with current_runtime().engine.connect() as conn:
        found = conn.execute(_INGESTION, {"id": ident}).first()
    if found is None:
        raise ApiError(404, "not_found", f"no ingestion {ingestion_id!r}")
    return ident, found


class RejectionsQuery(Schema):
    limit = Int(validate=validate.Range(1, MAX_LIMIT), load_default=DEFAULT_LIMIT)
    cursor = Int(validate=validate.Range(1, MAX_CURSOR))
    format = one_of(FORMATS, load_default="json")


@bp.get("/ingestions/<ingestion_id>/rejections")
@operation(
    summary="The records an ingestion refused, with their values and errors, in input order; pass `next` back "
    "as `cursor` for the next page, or `format=csv` for all of them as a CSV to correct and upload again",
    description="CSV: one column per input field of the type (a list joined with `;`, an object as JSON), then "
    "`_raw` (the values when they fit no column: a line that was not JSON, or fields the schema does not have), "
    "`_row` (the file row or batch index) and `_errors` (`field: message; ...`). With `format=csv`, `cursor` and "
    "`limit` are optional: without them the CSV holds every rejection.",
    tags=["ingestions"],
    path={"ingestion_id": Uuid()},
    query=RejectionsQuery,
    responses={
        200: (
            "one page (JSON), or every rejection (CSV, as an attachment)",
            {"application/json": RejectionPage, "text/csv": {"type": "string"}},
        ),
        400: "a bad query parameter",
        404: "no such ingestion",
    },
)
def list_rejections(ingestion_id: str):
    params = query_parameters(PARAMETERS)
    fmt = params.get("format", "json")
    if fmt not in FORMATS:
        raise bad_parameter("format", f"must be one of {', '.join(FORMATS)}")
    try:
        # A CSV holds every rejection from ``cursor`` on, or ``limit`` of them when given.
        limit = parse_int(params, "limit", None if fmt == "csv" else DEFAULT_LIMIT, 1, MAX_LIMIT)
        cursor = parse_int(params, "cursor", None, 1, MAX_CURSOR)
    except InvalidParameter as exc:
        raise bad_parameter(exc.name, "must be an integer in range") from None
    ident, ingestion = ingestion_or_404(ingestion_id)
    if fmt == "csv":
        return csv_response(ident, ingestion.record_type, cursor or 0, limit)
    with current_runtime().engine.connect() as conn:
        rows = conn.execute(PAGE, {"id": ident, "from": cursor or 0, "n": limit + 1}).all()
    items = [rejection_item(row, upload=ingestion.upload) for row in rows[:limit]]
    following = rows[limit - 1].position + 1 if len(rows) > limit else None
    return reply(RejectionPage, {"rejections": items, "next": following, "limit": limit})


def rejection_item(row: sa.Row, *, upload: bool) -> dict[str, Any]:
    return {
        "index": None if upload else row.position,
        "row": row.position if upload else None,
        "natural_key": row.natural_key,
        "raw": row.raw,
        "errors": row.errors,
        "created_at": row.created_at,
    }


# -- CSV ----------------------------------------------------------------------------------------


def cell(value: Any) -> str:
    """A value as received, as a spreadsheet cell that the upload parser reads back."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ";".join(cell(item) if not isinstance(item, (list, dict)) else _json(item) for item in value)
    if isinstance(value, dict):
        return _json(value)
    return str(value)


def _json(value: Any) -> str:
    return orjson.dumps(json_safe(value)).decode()


def errors_text(errors: Any) -> str:
    """``{field: [message]}`` as ``field: message; field: message``."""
    if not isinstance(errors, dict):
        return cell(errors)
    parts = []
    for field, messages in errors.items():
        for message in messages if isinstance(messages, list) else [messages]:
            parts.append(f"{field}: {cell(message)}")
    return "; ".join(parts)


def csv_row(fields: list[str], position: int, raw: Any, errors: Any) -> list[str]:
    """One rejection as CSV cells: the fields, then ``_raw``, ``_row``, ``_errors``."""
    if isinstance(raw, dict):
        # A file's columns as the parser matched them to fields ("Student ID" is student_id);
        # its note columns (``_row``, ``_errors`` of an earlier download) are not carried over.
        data = {normalise(k): v for k, v in raw.items() if not str(k).strip().startswith("_")}
        values = [cell(data.get(name)) for name in fields]
        leftover = "" if set(data) <= set(fields) else _json(raw)
    else:
        values = [""] * len(fields)
        leftover = raw if isinstance(raw, str) else "" if raw is None else _json(raw)
    return [*values, leftover, str(position), errors_text(errors)]


def _csv_lines(ident: uuid.UUID, fields: list[str], start: int, limit: int | None) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*fields, *TRAILING_COLUMNS])
    # A server-side cursor, STREAM_ROWS rows a round trip: never the whole set in memory.
    with current_runtime().engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(
            _ALL, {"id": ident, "from": start, "n": limit}
        )
        for row in result:
            writer.writerow(csv_row(fields, row.position, row.raw, row.errors))
            if buffer.tell() >= FLUSH_BYTES:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


def csv_response(ident: uuid.UUID, type_name: str, start: int, limit: int | None) -> Response:
    record_type = current_runtime().registry.get(type_name)
    if record_type is None:
        raise ApiError(404, "unknown_record_type", f"record type {type_name!r} is not registered any more")
    return Response(
        stream_with_context(_csv_lines(ident, input_fields(record_type), start, limit)),
        mimetype="text/csv",
        headers={"Content-Disposition": f"attachment; filename=rejections-{ident}.csv"},
    )
