"""The answers every operation shares (401, 403, 429, 503), the bodies of the plain answers, and
``GET /api/v1/audit`` in the OpenAPI document.

:func:`complete` runs on the finished document: an operation with ``security`` can answer 401
(no or unknown key), 403 (the key's role lacks the right) and 429 (over ``ETL_RATE_LIMIT``); any
operation that reads the database can answer 503. Every answer gets a schema.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec

from etl_app import audit
from etl_app.models import AUDIT_OUTCOMES, DEAD_LETTER_STATUSES, OUTCOMES, STATUSES

ERROR = {"$ref": "#/components/schemas/Error"}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 0}}}
SHARED: dict[str, dict[str, Any]] = {
    "401": {"name": "Unauthorized", "description": "missing or unknown API key"},
    "403": {"name": "Forbidden", "description": "the key's role lacks the right this operation needs"},
    "429": {"name": "RateLimited", "description": "the key is over ETL_RATE_LIMIT", "headers": RETRY_AFTER},
    "503": {"name": "Unavailable", "description": "the database is unavailable; retry", "headers": RETRY_AFTER},
}
# Paths that never touch the database.
NO_DATABASE = {"/health"}

TEXT, INTEGER, OBJECT = {"type": "string"}, {"type": "integer"}, {"type": "object"}
MOMENT = {"type": "string", "format": "date-time"}
# The lineage of one stored record (etl_app.lineage).
NULLABLE_TEXT, NULLABLE_MOMENT, NULLABLE_INTEGER = (
    {**TEXT, "nullable": True},
    {**MOMENT, "nullable": True},
    {**INTEGER, "nullable": True},
)
UUID = {"type": "string", "format": "uuid"}
FILE = {
    "type": "object",
    "nullable": True,
    "description": "the uploaded file and its row the record came from; null unless from an upload",
    "properties": {"filename": TEXT, "row": NULLABLE_INTEGER},
}
LINEAGE_REPLAY = {
    "type": "object",
    "description": "an audited replay or edit of this one dead letter (bulk and automatic replays are not listed)",
    "properties": {
        "at": MOMENT,
        "key_id": TEXT,
        "action": {"type": "string", "enum": ["replay", "edit"]},
        "outcome": {"type": "string", "enum": list(AUDIT_OUTCOMES)},
        "message": NULLABLE_TEXT,
        "request_id": NULLABLE_TEXT,
    },
}
LINEAGE_DEAD_LETTER = {
    "type": "object",
    "nullable": True,
    "properties": {
        "id": INTEGER,
        "error_type": TEXT,
        "error": TEXT,
        "status": {"type": "string", "enum": list(DEAD_LETTER_STATUSES)},
        "attempts": INTEGER,
        "first_failed_at": MOMENT,
        "last_failed_at": MOMENT,
        "replay_count": INTEGER,
        "last_replayed_at": NULLABLE_MOMENT,
        "last_outcome": {"type": "string", "enum": list(OUTCOMES), "nullable": True},
        "superseded_by": {
            "type": "object",
            "nullable": True,
            "properties": {"raw_record_id": NULLABLE_INTEGER, "ingestion_id": {**UUID, "nullable": True}},
        },
        "edited_fields": {
            "type": "array",
            "items": TEXT,
            "nullable": True,
            "description": "fields of the current payload that differ from the one that last failed",
        },
        "replays_not_listed": {**INTEGER, "description": "replays counted but not in `replays` (bulk, automatic)"},
    },
}
LINEAGE_HISTORY_ENTRY = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": ["raw_record", "rejection"]},
        "raw_record_id": NULLABLE_INTEGER,
        "rejection_id": NULLABLE_INTEGER,
        "ingestion_id": UUID,
        "source": NULLABLE_TEXT,
        "status": {"type": "string", "enum": list(STATUSES)},
        "received_at": MOMENT,
        "settled_at": NULLABLE_MOMENT,
        "attempts": NULLABLE_INTEGER,
        "stored": {"type": "boolean", "description": "the version the table holds now"},
        "file": FILE,
        "position": {**NULLABLE_INTEGER, "description": "a rejection's index in its batch or row in its file"},
        "errors": {**OBJECT, "nullable": True, "description": "a rejection's field errors"},
        "dead_letter": LINEAGE_DEAD_LETTER,
        "replays": {"type": "array", "items": LINEAGE_REPLAY},
    },
}
LINEAGE = {
    "type": "object",
    "properties": {
        "ingestion_id": UUID,
        "raw_record_id": NULLABLE_INTEGER,
        "source": {
            **NULLABLE_TEXT,
            "description": "api, batch, ndjson, upload; replay when the stored version landed through a replay",
        },
        "ingestion_source": NULLABLE_TEXT,
        "source_label": {**NULLABLE_TEXT, "description": "the `source` the client gave in the record"},
        "file": FILE,
        "received_at": MOMENT,
        "enriched_at": MOMENT,
        "persisted_at": MOMENT,
        "attempts": NULLABLE_INTEGER,
        "schema_version": INTEGER,
        "history": {
            "type": "array",
            "items": LINEAGE_HISTORY_ENTRY,
            "description": "raw records and rejections of this key, oldest first; the latest 100",
        },
        "history_truncated": {"type": "boolean"},
    },
}
SHARE = {"type": "number", "nullable": True}
# An ingestion's quality (etl_app.quality.as_report): null shares when nothing was accepted.
QUALITY = {
    "type": "object",
    "properties": {
        "received": INTEGER,
        "accepted": INTEGER,
        "rejected": INTEGER,
        "validity": {"type": "number"},
        "completeness": {
            "type": "object",
            "nullable": True,
            "additionalProperties": SHARE,
            "description": "{field: share} for every input field, and overall (the optional fields' mean)",
        },
        "uniqueness": SHARE,
        "integrity": SHARE,
        "timeliness": {
            "type": "object",
            "nullable": True,
            "properties": {"p50": {"type": "number"}, "p95": {"type": "number"}, "max": {"type": "number"}},
            "description": "seconds from event time to receipt",
        },
        "score": SHARE,
        "level": {"type": "string", "enum": ["excellent", "good", "fair", "poor", "unusable"]},
        "top_errors": {
            "type": "array",
            "items": {"type": "object", "properties": {"field": TEXT, "message": TEXT, "count": INTEGER}},
        },
    },
}
UPLOAD = {
    "type": "object",
    "properties": {
        "filename": TEXT,
        "format": TEXT,
        "note": {**TEXT, "nullable": True},
        "size": INTEGER,
        "status": {"type": "string", "enum": ["stored", "parsing", "parsed", "failed"]},
        "rows_read": INTEGER,
        "progress": {"type": "number"},
        "error": {**TEXT, "nullable": True},
    },
}
BODIES: dict[tuple[str, str, str], dict[str, Any]] = {
    ("/api/v1/records/{record_type}/{key}", "get", "200"): {
        "type": "object",
        "properties": {"record_type": TEXT, "key": TEXT, "fields": OBJECT, "derived": OBJECT, "lineage": LINEAGE},
    },
    ("/api/v1/ingestions/{ingestion_id}", "get", "200"): {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "record_type": TEXT,
            "source": TEXT,
            "status": {"type": "string", "enum": ["running", "finished", "failed"]},
            "counts": {
                "type": "object",
                "properties": {name: INTEGER for name in ("received", "persisted", "dead", "rejected", "in_flight")},
            },
            "quality": {**QUALITY, "nullable": True, "description": "docs/quality.md; null while running"},
            "created_at": MOMENT,
            "finished_at": {**MOMENT, "nullable": True},
            "upload": {**UPLOAD, "nullable": True, "description": "null unless the ingestion is an upload"},
        },
    },
    ("/api/v1/record-types", "get", "200"): {
        "type": "object",
        "properties": {"record_types": {"type": "array", "items": OBJECT}},
    },
    ("/health", "get", "200"): {"type": "object", "properties": {"status": TEXT}},
    ("/ready", "get", "200"): {"type": "object", "properties": {"status": TEXT, "checks": OBJECT}},
    ("/ready", "get", "503"): {"type": "object", "properties": {"status": TEXT, "checks": OBJECT}},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with the shared answers on every operation that can give them, and every answer typed."""
    responses = doc.setdefault("components", {}).setdefault("responses", {})
    for shared in SHARED.values():
        responses[shared["name"]] = {
            "description": shared["description"],
            "content": _json(ERROR),
            **({"headers": shared["headers"]} if "headers" in shared else {}),
        }
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            answers = operation.setdefault("responses", {})
            codes = ["401", "403", "429"] if operation.get("security") else []
            if path not in NO_DATABASE and path != "/ready":
                codes.append("503")
            for code in codes:
                answers[code] = {"$ref": f"#/components/responses/{SHARED[code]['name']}"}
            if any(p.get("in") == "query" for p in operation.get("parameters", [])):
                answers.setdefault("400", {"description": "a bad query parameter", "content": _json(ERROR)})
            for code, answer in answers.items():
                if "$ref" in answer or "content" in answer:
                    continue
                if path == "/metrics" and code == "200":
                    answer["content"] = {"text/plain": {"schema": TEXT}}
                else:
                    body = BODIES.get((path, method, code), OBJECT if code.startswith("2") else ERROR)
                    answer["content"] = _json(body)
    return doc


def audit_path(spec: APISpec) -> None:
    """``GET /api/v1/audit``: the audit trail, newest first (etl_app.api.audit)."""
    spec.components.schema(
        "AuditEntry",
        {
            "type": "object",
            "properties": {
                "id": INTEGER,
                "at": MOMENT,
                "key_id": TEXT,
                "action": {"type": "string", "enum": list(audit.ACTIONS)},
                "target": OBJECT,
                "count": {**INTEGER, "nullable": True},
                "outcome": {"type": "string", "enum": list(AUDIT_OUTCOMES)},
                "message": {**TEXT, "nullable": True},
                "request_id": {**TEXT, "nullable": True},
            },
        },
    )
    spec.path(
        path="/api/v1/audit",
        operations={
            "get": {
                "summary": "The audit trail (replays, edits, discards, job runs), newest first; pass `next` "
                "back as `cursor` for the next page",
                "tags": ["audit"],
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "action", "in": "query", "schema": {"type": "string", "enum": list(audit.ACTIONS)}},
                    {
                        "name": "key_id",
                        "in": "query",
                        "description": "a key id, `cli` or `beat`",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\x00]+$"},
                    },
                    {"name": "since", "in": "query", "schema": MOMENT},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": audit.MAX_LIMIT, "default": 50},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "one page, newest first",
                        "content": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "audit": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
                                    "next": {**INTEGER, "nullable": True},
                                    "limit": INTEGER,
                                },
                            }
                        ),
                    },
                    "400": {"description": "a bad query parameter", "content": _json(ERROR)},
                },
            }
        },
    )
