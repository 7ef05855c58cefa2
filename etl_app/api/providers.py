"""External lookup providers (etl_app.lookups): their counters and circuit breakers.

- ``GET /api/v1/providers`` (``read``): every configured provider (etl_app.lookups.registry) with
  ``host`` (its base URL's host and port only; null when off), ``rate``, ``ttl_seconds``, the
  counters every worker adds to (``calls`` by outcome, ``cache`` hits and misses, ``errors`` by
  kind, ``rate_limited``: 429 answers) and its breaker now (``state``, ``open_for_seconds`` of
  cool-down left, consecutive ``failures``, ``opened_count``). 503 when Redis does not answer.
- ``POST /api/v1/providers/<provider>/reset`` (``operate``): closes the provider's breaker now
  (its opened count is kept); audited ``breaker_reset`` with target ``{provider}``; answers 200
  with the provider as the list shows it. 404 for an unknown provider.
"""

from __future__ import annotations

from apispec import APISpec
from flask import Blueprint, jsonify

from etl_app.lookups.metrics import BREAKER_STATES
from etl_app.lookups.registry import CALL_OUTCOMES
from etl_app.web.providers import listed_providers, reset_provider

bp = Blueprint("providers", __name__, url_prefix="/api/v1/providers")


@bp.get("")
def list_providers():
    return jsonify({"providers": listed_providers()})


@bp.post("/<provider>/reset")
def reset(provider: str):
    return jsonify(reset_provider(provider))


def openapi_paths(spec: APISpec, names: list[str]) -> None:
    """The providers' paths in the OpenAPI document; ``names``: the configured providers."""
    integer, text = {"type": "integer", "minimum": 0}, {"type": "string"}
    counts = {"type": "object", "additionalProperties": integer}
    spec.components.schema(
        "Provider",
        {
            "type": "object",
            "required": [
                "name",
                "enabled",
                "host",
                "rate",
                "ttl_seconds",
                "calls",
                "cache",
                "errors",
                "rate_limited",
                "breaker",
            ],
            "additionalProperties": False,
            "properties": {
                "name": text,
                "enabled": {"type": "boolean"},
                "host": {**text, "nullable": True, "description": "the base URL's host[:port]; null when off"},
                "rate": {**text, "nullable": True, "description": "limits' notation, e.g. 10/second; null: none"},
                "ttl_seconds": integer,
                "calls": {
                    "type": "object",
                    "required": [*CALL_OUTCOMES, "total"],
                    "additionalProperties": False,
                    "properties": {name: integer for name in (*CALL_OUTCOMES, "total")},
                },
                "cache": {
                    "type": "object",
                    "required": ["hit", "miss", "hit_ratio"],
                    "additionalProperties": False,
                    "properties": {
                        "hit": integer,
                        "miss": integer,
                        "hit_ratio": {"type": "number", "minimum": 0, "maximum": 1, "nullable": True},
                    },
                },
                "errors": {**counts, "description": "failed lookups by kind (timeout, connect, ...)"},
                "rate_limited": {**integer, "description": "429 answers"},
                "breaker": {
                    "type": "object",
                    "required": ["state", "open_for_seconds", "failures", "opened_count"],
                    "additionalProperties": False,
                    "properties": {
                        "state": {"type": "string", "enum": list(BREAKER_STATES)},
                        "open_for_seconds": {"type": "number", "minimum": 0},
                        "failures": integer,
                        "opened_count": integer,
                    },
                },
            },
        },
    )
    one = {"$ref": "#/components/schemas/Provider"}
    security, tags = [{"bearer": []}], ["providers"]
    error = {"$ref": "#/components/schemas/Error"}

    def answer(description: str, schema: dict | None = None) -> dict:
        return {"description": description, "content": {"application/json": {"schema": schema or error}}}

    spec.path(
        path="/api/v1/providers",
        operations={
            "get": {
                "summary": "The external lookup providers: calls, cache hits and misses, errors, 429s, breaker",
                "tags": tags,
                "security": security,
                "responses": {
                    "200": answer(
                        "providers",
                        {
                            "type": "object",
                            "required": ["providers"],
                            "additionalProperties": False,
                            "properties": {"providers": {"type": "array", "items": one}},
                        },
                    ),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/providers/{provider}/reset",
        operations={
            "post": {
                "summary": "Close a provider's circuit breaker now (audited breaker_reset)",
                "tags": tags,
                "security": security,
                "parameters": [
                    {"name": "provider", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}
                ],
                "responses": {
                    "200": answer("the breaker is closed; the provider as listed", one),
                    "404": answer("unknown provider"),
                },
            }
        },
    )
