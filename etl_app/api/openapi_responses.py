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
from etl_app.models import AUDIT_OUTCOMES

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
BODIES: dict[tuple[str, str, str], dict[str, Any]] = {
    ("/api/v1/records/{record_type}/{key}", "get", "200"): {
        "type": "object",
        "properties": {"record_type": TEXT, "key": TEXT, "fields": OBJECT, "derived": OBJECT, "lineage": OBJECT},
    },
    ("/api/v1/ingestions/{ingestion_id}", "get", "200"): {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "record_type": TEXT,
            "source": TEXT,
            "status": TEXT,
            "counts": {"type": "object", "additionalProperties": INTEGER},
            "quality": {**OBJECT, "nullable": True},
            "created_at": MOMENT,
            "finished_at": {**MOMENT, "nullable": True},
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
