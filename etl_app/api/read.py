"""Read endpoints: stored records with derived fields and lineage, ingestions, record types.

``GET /api/v1/ingestions``: the ingestions newest first, as the Ingestions page lists them
(:func:`etl_app.ingest.listing.list_ingestions`), each as ``GET /api/v1/ingestions/{id}`` shows
it. Filters ``record_type``, ``status`` (running, finished, failed: the page's), ``since`` (ISO
8601, on ``created_at``; naive means UTC); ``limit`` (1..100, default 25) and ``cursor`` (the
``next`` of the previous page, null on the last one).
"""

from __future__ import annotations

import re
import uuid

from flask import Blueprint
from marshmallow import Schema, validate

from etl_app.api.bodies import Ingestion, IngestionPage, Int, RecordTypes, StoredRecord, Text, Uuid, described, one_of
from etl_app.api.common import (
    bad_parameter,
    choice_parameter,
    query_parameters,
    record_type_or_404,
    since_parameter,
)
from etl_app.api.spec import Context, operation, reply
from etl_app.dead_letters.errors import InvalidParameter
from etl_app.dead_letters.filters import MOMENT_PATTERN, parse_int
from etl_app.ingest import listing
from etl_app.lineage import lineage
from etl_app.lineage.records import derived_fields, kept_extra, record_fields, stored_row
from etl_app.quality.settle import ingestion_status
from etl_app.record_types import RecordType
from etl_app.web.context import ApiError, current_runtime

bp = Blueprint("read", __name__, url_prefix="/api/v1")


@bp.get("/records/<type_name>/<key>")
@operation(
    lambda ctx: {
        "summary": "A stored record with its derived fields and lineage",
        "path": {"record_type": one_of(ctx.registry.names())},
        "responses": {200: ("the record", StoredRecord), 404: "unknown record type, or no such record"},
    }
)
def get_record(type_name: str, key: str):
    record_type = record_type_or_404(type_name)
    # One snapshot for the row and its history (etl_app.lineage), read-only.
    engine = current_runtime().engine
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        row = stored_row(conn, record_type, key)
        if row is None:
            what = f"{record_type.name} record with {record_type.key} {key!r}"
            raise ApiError(404, "not_found", f"no {what} is stored (yet)")
        found = lineage(conn, record_type, row)
    fields, derived = record_fields(record_type, row)
    return reply(
        StoredRecord,
        {
            "record_type": record_type.name,
            "key": key,
            "fields": fields,
            "derived": derived,
            "extra": kept_extra(row),
            "lineage": found,
        },
    )


# A cursor as listing.encode_cursor writes it: a moment (MOMENT_PATTERN without its anchors, its
# offset required: the "?" before "$" dropped), "~" and the id. decode_cursor reads every value of it.
UUID_PATTERN = "[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"
CURSOR_PATTERN = f"^{MOMENT_PATTERN.removeprefix('^').removesuffix('?$')}~{UUID_PATTERN}$"
NOT_A_CURSOR = "is not a cursor of this list: pass back the `next` of a page"
INGESTION_PARAMETERS = ("record_type", "status", "since", "limit", "cursor")


def _ingestion_listing(ctx: Context) -> dict:
    query = {
        "record_type": one_of(ctx.registry.names()),
        "status": one_of(listing.STATUSES),
        "since": Text(
            validate=validate.Regexp(MOMENT_PATTERN),
            **described("only ingestions created at or after this moment (ISO 8601; naive means UTC)"),
        ),
        "limit": Int(validate=validate.Range(1, listing.MAX_LIMIT), load_default=listing.DEFAULT_LIMIT),
        "cursor": Text(validate=validate.Regexp(CURSOR_PATTERN), **described("the `next` of the previous page")),
    }
    return {
        "summary": "List ingestions, newest first; pass `next` back as `cursor` for the next page",
        "query": Schema.from_dict(query, name="IngestionQuery"),
        "responses": {200: ("one page, newest first", IngestionPage), 400: "a bad query parameter"},
    }


@bp.get("/ingestions")
@operation(_ingestion_listing)
def list_ingestions():
    params = query_parameters(INGESTION_PARAMETERS)
    runtime = current_runtime()
    record_type = choice_parameter(params, "record_type", runtime.registry.names())
    status = choice_parameter(params, "status", listing.STATUSES)
    since = since_parameter(params)
    try:
        limit = parse_int(params, "limit", listing.DEFAULT_LIMIT, 1, listing.MAX_LIMIT)
    except InvalidParameter:
        raise bad_parameter("limit", f"must be an integer from 1 to {listing.MAX_LIMIT}") from None
    cursor = params.get("cursor")
    if cursor is not None and not re.fullmatch(CURSOR_PATTERN, cursor):
        raise bad_parameter("cursor", NOT_A_CURSOR)
    with runtime.engine.connect() as conn:
        try:
            listed = listing.list_ingestions(
                conn, record_type=record_type, status=status, since=since, cursor=cursor, limit=limit
            )
        except listing.BadCursor:
            raise bad_parameter("cursor", NOT_A_CURSOR) from None
        reports = [ingestion_status(conn, ident, runtime.registry, runtime.settings) for ident in listed.ids]
    found = [report for report in reports if report is not None]
    return reply(IngestionPage, {"ingestions": found, "next": listed.next, "limit": limit})


@bp.get("/ingestions/<ingestion_id>")
@operation(
    summary="Progress of one ingestion: counts by status",
    path={"ingestion_id": Uuid()},
    responses={200: ("the ingestion", Ingestion), 404: "no such ingestion"},
)
def get_ingestion(ingestion_id: str):
    try:
        ident = uuid.UUID(ingestion_id)
    except ValueError:
        raise ApiError(404, "not_found", f"no ingestion {ingestion_id!r}") from None
    with current_runtime().engine.connect() as conn:
        report = ingestion_status(conn, ident, current_runtime().registry, current_runtime().settings)
    if report is None:
        raise ApiError(404, "not_found", f"no ingestion {ingestion_id!r}")
    return reply(Ingestion, report)


@bp.get("/record-types")
@operation(summary="The registered record types and their fields", responses={200: ("record types", RecordTypes)})
def list_record_types():
    registry = current_runtime().registry
    return reply(RecordTypes, {"record_types": [describe(record_type) for record_type in registry]})


def describe(record_type: RecordType) -> dict:
    fields = []
    expected = {e.field for e in record_type.expected_fields}
    for name, field in record_type.loader.fields.items():
        fields.append(
            {"name": name, "type": type(field).__name__, "required": field.required, "expected": name in expected}
        )
    return {
        "name": record_type.name,
        "key": record_type.key,
        "description": record_type.description,
        "schema_version": record_type.schema_version,
        "parents": [{"field": p.field, "record_type": p.record_type} for p in record_type.parents],
        "fields": fields,
        "derived_fields": derived_fields(record_type),
        "contract": record_type.contract.describe(),
        "endpoints": {"single": f"/api/v1/{record_type.name}", "batch": f"/api/v1/{record_type.name}/batch"},
    }
