"""Read endpoints: stored records with derived fields and lineage, ingestions, record types."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify

from etl_app.api.errors import ApiError
from etl_app.api.ingest import record_type_or_404
from etl_app.db import LINEAGE_FIELDS
from etl_app.ingest.progress import ingestion_status
from etl_app.record_types import RecordType

bp = Blueprint("read", __name__, url_prefix="/api/v1")


def input_fields(rt: RecordType) -> list[str]:
    return [name for name in rt.loader.fields if name not in LINEAGE_FIELDS]


def derived_fields(rt: RecordType) -> list[str]:
    inputs = set(input_fields(rt))
    return [c.name for c in rt.table.columns if c.name not in inputs and c.name not in LINEAGE_FIELDS]


@bp.get("/records/<record_type>/<key>")
def get_record(record_type: str, key: str):
    rt = record_type_or_404(record_type)
    with current_app.extensions["etl"].engine.connect() as conn:
        row = conn.execute(sa.select(rt.table).where(rt.table.c[rt.key] == key)).mappings().first()
    if row is None:
        raise ApiError(404, "not_found", f"no {rt.name} record with {rt.key} {key!r} is stored (yet)")
    return jsonify(
        {
            "record_type": rt.name,
            "key": key,
            "fields": {name: row[name] for name in input_fields(rt) if name in row},
            "derived": {name: row[name] for name in derived_fields(rt)},
            "lineage": {name: row[name] for name in LINEAGE_FIELDS},
        }
    )


@bp.get("/ingestions/<ingestion_id>")
def get_ingestion(ingestion_id: str):
    try:
        ident = uuid.UUID(ingestion_id)
    except ValueError:
        raise ApiError(404, "not_found", f"no ingestion {ingestion_id!r}") from None
    with current_app.extensions["etl"].engine.connect() as conn:
        report = ingestion_status(conn, ident)
    if report is None:
        raise ApiError(404, "not_found", f"no ingestion {ingestion_id!r}")
    return jsonify(report)


@bp.get("/record-types")
def list_record_types():
    registry = current_app.extensions["etl"].registry
    return jsonify({"record_types": [describe(rt) for rt in registry]})


def describe(rt: RecordType) -> dict:
    fields = []
    for name, field in rt.loader.fields.items():
        fields.append({"name": name, "type": type(field).__name__, "required": field.required})
    return {
        "name": rt.name,
        "key": rt.key,
        "description": rt.description,
        "schema_version": rt.schema_version,
        "parents": [{"field": p.field, "record_type": p.record_type} for p in rt.parents],
        "fields": fields,
        "derived_fields": derived_fields(rt),
        "endpoints": {"single": f"/api/v1/{rt.name}", "batch": f"/api/v1/{rt.name}/batch"},
    }
