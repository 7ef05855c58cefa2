"""The OpenAPI 3 document, generated from the registered marshmallow schemas, and its UI."""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from apispec import APISpec
from flask import Blueprint, Response, abort, current_app, jsonify, send_from_directory

import etl_app
from etl_app.api import dead_letter_groups, openapi_fields, openapi_responses, providers, rejections, reports
from etl_app.api.jobs import openapi_paths as jobs_openapi_paths
from etl_app.errors import ERROR_TYPES
from etl_app.lookups.registry import providers as lookup_providers
from etl_app.models import DEAD_LETTER_STATUSES, OUTCOMES, STATUSES
from etl_app.record_types import Registry

bp = Blueprint("openapi", __name__)

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {
        400: "malformed body",
        401: "missing or wrong API key",
        404: "unknown record type or id",
        409: "not in a state that allows this",
        413: "body, batch or file over the limit",
        415: "wrong Content-Type",
        422: "validation failed",
    }
    return {str(c): _json(ERROR, text[c]) for c in codes}


def build_spec(registry: Registry, provider_names: list[str] | None = None) -> dict:
    ma_plugin = openapi_fields.plugin()
    spec = APISpec(
        title="etl_app",
        version=etl_app.__version__,
        openapi_version="3.0.3",
        plugins=[ma_plugin],
        info={"description": "Ingest API of the etl_app Celery ETL service."},
    )
    openapi_fields.register(ma_plugin)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema(
        "Error",
        {
            "type": "object",
            "properties": {
                "error": {"type": "string"},
                "message": {"type": "string"},
                "errors": {"description": "field errors: {field: [message]} or [{index, errors}]"},
            },
            "required": ["error", "message"],
        },
    )
    spec.components.schema(
        "Accepted",
        {
            "type": "object",
            "properties": {
                "ingestion_id": {"type": "string", "format": "uuid"},
                "accepted": {"type": "integer"},
                "rejected": {"type": "integer"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"index": {"type": "integer"}, "errors": {"type": "object"}},
                    },
                },
            },
        },
    )
    spec.components.schema(
        "UploadAccepted",
        {
            "type": "object",
            "properties": {
                "ingestion_id": {"type": "string", "format": "uuid"},
                "upload": {
                    "type": "object",
                    "properties": {
                        "filename": {"type": "string"},
                        "format": {"type": "string", "enum": ["csv", "tsv", "json", "ndjson", "xlsx", "parquet"]},
                        "size": {"type": "integer"},
                        "note": {"type": "string", "nullable": True},
                    },
                },
            },
        },
    )
    for record_type in registry:
        component = record_type.schema.__name__
        spec.components.schema(component, schema=record_type.schema)
        ref = {"$ref": f"#/components/schemas/{component}"}
        spec.path(
            path=f"/api/v1/{record_type.name}",
            operations={
                "post": {
                    "summary": f"Submit one {record_type.name} record",
                    "tags": [record_type.name],
                    "security": [{"bearer": []}],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": ref}}},
                    "responses": {
                        "202": _json({"$ref": "#/components/schemas/Accepted"}, "stored; processing"),
                        **_errors(400, 401, 404, 413, 415, 422),
                    },
                }
            },
        )
        spec.path(
            path=f"/api/v1/{record_type.name}/batch",
            operations={
                "post": {
                    "summary": f"Submit a batch of {record_type.name} records (JSON array or NDJSON)",
                    "tags": [record_type.name],
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"type": "array", "items": ref, "minItems": 1}},
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "202": _json({"$ref": "#/components/schemas/Accepted"}, "valid records stored"),
                        **_errors(400, 401, 404, 413, 415, 422),
                    },
                }
            },
        )
        spec.path(
            path=f"/api/v1/{record_type.name}/upload",
            operations={
                "post": {
                    "summary": f"Upload a file of {record_type.name} records (csv, tsv, json, ndjson, xlsx, parquet)",
                    "description": "Stored, then parsed in the background; rows refused by the parser become "
                    "rejections with their row number. Follow it at GET /api/v1/ingestions/{ingestion_id}.",
                    "tags": [record_type.name],
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"file": {"type": "string", "format": "binary"}},
                                    "required": ["file"],
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json({"$ref": "#/components/schemas/UploadAccepted"}, "file stored; parsing"),
                        **_errors(400, 401, 404, 413, 415, 422),
                    },
                }
            },
        )
    spec.path(
        path="/api/v1/records/{record_type}/{key}",
        operations={
            "get": {
                "summary": "A stored record with its derived fields and lineage",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "record_type", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "the record"}, **_errors(401, 404)},
            }
        },
    )
    spec.path(
        path="/api/v1/ingestions/{ingestion_id}",
        operations={
            "get": {
                "summary": "Progress of one ingestion: counts by status",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "ingestion_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    }
                ],
                "responses": {"200": {"description": "the ingestion"}, **_errors(401, 404)},
            }
        },
    )
    spec.path(
        path="/api/v1/record-types",
        operations={
            "get": {
                "summary": "The registered record types and their fields",
                "security": [{"bearer": []}],
                "responses": {"200": {"description": "record types"}, **_errors(401)},
            }
        },
    )
    rejections.openapi_paths(spec)
    _dead_letter_paths(spec, registry)
    dead_letter_groups.openapi_paths(spec, dead_letter_filters(registry))
    jobs_openapi_paths(spec)
    providers.openapi_paths(spec, provider_names or ["geocoder"])
    reports.openapi_paths(spec, registry)
    spec.path(
        path="/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics",
                "security": [{"bearer": []}],
                "responses": {"200": {"description": "text format"}},
            }
        },
    )
    openapi_responses.audit_path(spec)
    spec.path(path="/health", operations={"get": {"summary": "Liveness", "responses": {"200": {"description": "up"}}}})
    spec.path(
        path="/ready",
        operations={
            "get": {
                "summary": "Readiness: database and broker reachable",
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
    )
    return openapi_responses.complete(spec.to_dict())


def dead_letter_filters(registry: Registry) -> list[dict]:
    """The query parameters that filter dead letters (etl_app.dead_letters.filters)."""
    return [
        {"name": "record_type", "in": "query", "schema": {"type": "string", "enum": registry.names()}},
        {"name": "error_type", "in": "query", "schema": {"type": "string", "enum": list(ERROR_TYPES)}},
        {"name": "ingestion_id", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {
            "name": "since",
            "in": "query",
            "description": "only dead letters that last failed at or after this moment",
            "schema": {"type": "string", "format": "date-time"},
        },
        {
            "name": "status",
            "in": "query",
            "schema": {"type": "string", "enum": [*DEAD_LETTER_STATUSES, "all"], "default": "open"},
        },
    ]


def _dead_letter_paths(spec: APISpec, registry: Registry) -> None:
    security = [{"bearer": []}]
    tags = ["dead-letters"]
    filters = dead_letter_filters(registry)
    ident = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    replayed = {"type": "object", "properties": {"replayed": {"type": "integer"}}}
    integer, text, moment = {"type": "integer"}, {"type": "string"}, {"type": "string", "format": "date-time"}
    summary = {
        "id": integer,
        "raw_record_id": integer,
        "ingestion_id": {"type": "string", "format": "uuid"},
        "record_type": text,
        "natural_key": {**text, "nullable": True},
        "error_type": {"type": "string", "enum": list(ERROR_TYPES)},
        "error": text,
        "task_name": {**text, "nullable": True},
        "attempts": integer,
        "status": {"type": "string", "enum": list(DEAD_LETTER_STATUSES)},
        "replay_count": integer,
        "first_failed_at": moment,
        "last_failed_at": moment,
        "last_replayed_at": {**moment, "nullable": True},
        "last_outcome": {
            "type": "string",
            "enum": list(OUTCOMES),
            "nullable": True,
            "description": "what became of the latest replay",
        },
        "superseded_by": {
            "type": "object",
            "nullable": True,
            "description": "status superseded: the replayed record settled without landing, because this later "
            "record of its key is stored (raw_record_id is null for a row stored before tables carried it)",
            "properties": {"raw_record_id": {**integer, "nullable": True}, "ingestion_id": {"type": "string"}},
        },
        "record_status": {"type": "string", "enum": list(STATUSES), "description": "its raw record's status now"},
    }
    spec.components.schema("DeadLetterSummary", {"type": "object", "properties": summary})
    spec.components.schema(
        "DeadLetter",
        {
            "type": "object",
            "properties": {
                **summary,
                "payload": {"description": "the payload that failed"},
                "traceback": {**text, "nullable": True},
                "traceback_truncated": {"type": "boolean"},
                "edits": {
                    "type": "array",
                    "description": "its replays with a corrected payload, oldest first: the payload as it was, "
                    "as corrected, and the key id that did it",
                    "items": {
                        "type": "object",
                        "properties": {
                            "at": moment,
                            "key_id": text,
                            "original": {"description": "the dead letter's payload before the edit"},
                            "edited": {"description": "the payload replayed"},
                        },
                    },
                },
            },
        },
    )
    spec.path(
        path="/api/v1/dead-letters",
        operations={
            "get": {
                "summary": "List dead letters, newest first; pass `next` back as `cursor` for the next page",
                "tags": tags,
                "security": security,
                "parameters": [
                    *filters,
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "dead_letters": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/DeadLetterSummary"},
                                },
                                "next": {**text, "nullable": True},
                                "limit": integer,
                            },
                        },
                        "one page, newest first",
                    ),
                    **_errors(400, 401),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/dead-letters/{id}",
        operations={
            "get": {
                "summary": "One dead letter: payload, error, last 20 traceback lines, attempts, record_status, "
                "and for a superseded one the stored record that kept its key",
                "tags": tags,
                "security": security,
                "parameters": ident,
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/DeadLetter"}, "the dead letter"),
                    **_errors(401, 404),
                },
            },
            "delete": {
                "summary": "Discard (same as POST .../discard)",
                "tags": tags,
                "security": security,
                "parameters": ident,
                "responses": {"200": {"description": "discarded"}, **_errors(401, 404, 409)},
            },
        },
    )
    spec.path(
        path="/api/v1/dead-letters/{id}/replay",
        operations={
            "post": {
                "summary": "Replay one open dead letter, optionally with a corrected payload (validated again)",
                "tags": tags,
                "security": security,
                "parameters": ident,
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"payload": {"type": "object"}},
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "properties": {
                                "replayed": {"type": "integer"},
                                "dead_letter_id": {"type": "integer"},
                                "raw_record_id": {"type": "integer"},
                            },
                        },
                        "back in the pipeline",
                    ),
                    **_errors(400, 401, 404, 409, 415, 422),
                },
            }
        },
    )
    # The filters go in a JSON body (the server also reads them from the query string, for curl;
    # never both at once). A filter, or all: true, is required.
    narrowing = ("record_type", "error_type", "ingestion_id", "since")
    bulk_body = {
        "type": "object",
        "properties": {
            **{f["name"]: f["schema"] for f in filters[:4]},
            "limit": {"type": "integer", "minimum": 1, "maximum": 10_000},
            "all": {"type": "boolean", "default": False},
            "dry_run": {"type": "boolean", "default": False},
        },
        "additionalProperties": False,
        "anyOf": [
            *({"required": [name]} for name in narrowing),
            {"required": ["all"], "properties": {"all": {"enum": [True]}}},
        ],
    }
    spec.path(
        path="/api/v1/dead-letters/replay",
        operations={
            "post": {
                "summary": "Replay open dead letters matching the filters (JSON body or query), at most 10,000 a call",
                "description": "Needs a filter, or `all: true` for every open dead letter; an empty filter value "
                "or no filter is 400 `filter_required` (`parameter` names the empty one), an unknown parameter "
                "400 `invalid_parameter`. `dry_run: true` changes nothing and answers 200 with the counts.",
                "tags": tags,
                "security": security,
                "requestBody": {"required": True, "content": {"application/json": {"schema": bulk_body}}},
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "dry_run": {"type": "boolean"},
                                "would_replay": integer,
                                "remaining": integer,
                            },
                        },
                        "dry run: how many it would replay, and how many matching ones would stay open",
                    ),
                    "202": _json(
                        {**replayed, "properties": {**replayed["properties"], "remaining": {"type": "integer"}}},
                        "`remaining`: matching dead letters still open",
                    ),
                    **_errors(400, 401, 415),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/dead-letters/{id}/discard",
        operations={
            "post": {
                "summary": "Discard an open dead letter: no replay, its record stays dead; idempotent",
                "tags": tags,
                "security": security,
                "parameters": ident,
                "responses": {"200": {"description": "discarded"}, **_errors(401, 404, 409)},
            }
        },
    )


@bp.get("/openapi.json")
def openapi_json():
    ext = current_app.extensions
    if "etl_openapi" not in ext:
        runtime = ext["etl"]
        names = list(lookup_providers(runtime.settings, runtime.registry))
        ext["etl_openapi"] = build_spec(runtime.registry, names)
    return jsonify(ext["etl_openapi"])


# Swagger UI's files come with the flask-swagger-ui package and are served from here, so /docs
# works on a machine without internet access.
DOCS_ASSETS = Path(flask_swagger_ui.__file__).parent / "dist"
DOCS_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"})

DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>etl_app API</title>
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
const key = localStorage.getItem("etlApiKey") || prompt("API key (Bearer) for this etl_app");
if (key) localStorage.setItem("etlApiKey", key);
SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui",
  requestInterceptor: (req) => { req.headers.Authorization = "Bearer " + key; return req; }});
</script>
<noscript>The machine-readable document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body></html>"""


@bp.get("/docs")
def docs():
    return Response(DOCS_PAGE, mimetype="text/html")


@bp.get("/docs/assets/<name>")
def docs_asset(name: str):
    if name not in DOCS_FILES:
        abort(404)
    return send_from_directory(DOCS_ASSETS, name, max_age=86400)
