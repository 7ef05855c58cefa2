"""Read endpoints: stored records with derived fields and lineage, ingestions, record types."""

from __future__ import annotations

import uuid

from flask import Blueprint

from etl_app.api.bodies import Ingestion, RecordTypes, StoredRecord, Uuid, one_of
from etl_app.api.common import record_type_or_404
from etl_app.api.spec import operation, reply
from etl_app.lineage import lineage
from etl_app.lineage.records import derived_fields, record_fields, stored_row
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
        {"record_type": record_type.name, "key": key, "fields": fields, "derived": derived, "lineage": found},
    )


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
    for name, field in record_type.loader.fields.items():
        fields.append({"name": name, "type": type(field).__name__, "required": field.required})
    return {
        "name": record_type.name,
        "key": record_type.key,
        "description": record_type.description,
        "schema_version": record_type.schema_version,
        "parents": [{"field": p.field, "record_type": p.record_type} for p in record_type.parents],
        "fields": fields,
        "derived_fields": derived_fields(record_type),
        "endpoints": {"single": f"/api/v1/{record_type.name}", "batch": f"/api/v1/{record_type.name}/batch"},
    }
