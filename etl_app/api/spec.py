"""The OpenAPI document, read from the handlers themselves.

Each view says what it does with :func:`operation`, beside it: ``summary``, ``description``,
``tags``, its ``path`` parameters (marshmallow fields), its request ``headers`` (OpenAPI
parameter objects), its ``query`` and ``body`` (marshmallow schemas; a body of several media
types as ``{media type: schema}``, ``body_rules`` for what marshmallow cannot say, such as an
``anyOf``) and its ``responses``: ``{status: (description, schema)}`` for a body the handler
makes with :func:`reply` from that same schema (``(description, schema, headers)`` with the
answer's headers), ``{status: description}`` for an error body
(:class:`etl_app.api.bodies.ErrorBody`). The argument may
also be a function of a :class:`Context` (the registered record types, the configured lookup
providers), for the enums that depend on them; ``each_record_type=True`` makes one path per
record type of a rule's ``<type_name>``.

:func:`build_spec` walks ``app.url_map``: every rule of a documented view is a path, with the
methods the rule serves, so the document lists what the router routes and the ``Allow`` of a
405 or an OPTIONS names the methods the document does. Every operation with ``security`` gets
the shared answers (401, 403, 429 and, as it reads the database, 503: :data:`SHARED`) unless it
documents its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, current_app, jsonify
from marshmallow import Schema, fields

import etl_app
from etl_app.api import openapi_fields
from etl_app.api.bodies import ErrorBody
from etl_app.api.bodies_operate import Provider
from etl_app.record_types import RecordType, Registry

Doc = dict[str, Any]
SECURITY = [{"bearer": []}]
ERROR = {"$ref": "#/components/schemas/Error"}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 0}}}
SHARED: dict[str, dict[str, Any]] = {
    "401": {"name": "Unauthorized", "description": "missing or unknown API key"},
    "403": {"name": "Forbidden", "description": "the key's role lacks the right this operation needs"},
    "429": {"name": "RateLimited", "description": "the key is over ETL_RATE_LIMIT", "headers": RETRY_AFTER},
    "503": {"name": "Unavailable", "description": "the database is unavailable; retry", "headers": RETRY_AFTER},
}
# The submit and upload endpoints' 429: the rate limit's, or the backlog's (etl_app.ingest.backlog).
BUSY_RESPONSE = {
    "name": "Busy",
    "description": "the key is over ETL_RATE_LIMIT (error rate_limited), or more records wait to be processed "
    "than the service takes (error backlog_full: the body's backlog, bound and retry_after say how many, and "
    "how long they have waited); retry after Retry-After seconds",
    "headers": RETRY_AFTER,
}
BUSY = {"$ref": f"#/components/responses/{BUSY_RESPONSE['name']}"}
# The document's names of the rules' path variables, where they differ.
PATH_NAMES = {"type_name": "record_type", "dead_letter_id": "id"}
_VARIABLE = re.compile(r"<(?:([^<>:]+):)?([^<>]+)>")  # <converter:name>


@dataclass(frozen=True)
class Context:
    """What an operation's document may depend on."""

    registry: Registry
    providers: list[str]
    record_type: RecordType | None = None


def operation(doc: Doc | Callable[[Context], Doc] | None = None, *, each_record_type: bool = False, **fields_: Any):
    """Mark a view with its operation's document (see the module docstring)."""

    def mark(view: Callable) -> Callable:
        view.openapi = (doc if doc is not None else fields_, each_record_type)  # type: ignore[attr-defined]
        return view

    return mark


_SCHEMAS: dict[type[Schema], Schema] = {}


def dump(schema: type[Schema], obj: Any) -> Any:
    """``obj`` through ``schema`` (its fields keep the values as they are: etl_app.api.bodies).
    With ETL_STRICT_BODIES set (the test suite sets it), an answer that the schema would change, a
    key it does not name above all, fails loudly instead of losing that key."""
    instance = _SCHEMAS.get(schema) or _SCHEMAS.setdefault(schema, schema())
    out = instance.dump(obj)
    if os.environ.get("ETL_STRICT_BODIES") and _plain(out) != _plain(obj):
        raise AssertionError(f"{schema.__name__} does not dump the answer as it is: {_plain(obj)!r}")
    return out


def _plain(value: Any) -> Any:
    return orjson.loads(current_app.json.dumps(value))


def reply(schema: type[Schema], obj: Any, status: int = 200):
    """The JSON answer ``obj``, dumped through the ``schema`` its operation documents."""
    return jsonify(dump(schema, obj)), status


def declared_query(endpoint: str, view_args: dict[str, Any]) -> frozenset[str] | None:
    """The query parameters the operation of ``endpoint`` documents (its ``query`` schema's names,
    and its ``body``'s for ``body_in_query``, an operation that reads its body's fields from the
    query string too); None for a view without a document (the pages, /docs). Cached per endpoint
    and record type."""
    view = current_app.view_functions.get(endpoint)
    marked = getattr(view, "openapi", None)
    if marked is None:
        return None
    doc, each_record_type = marked
    runtime = current_app.extensions["etl"]
    record_type = runtime.registry.get(str(view_args.get("type_name"))) if each_record_type else None
    if each_record_type and record_type is None:
        return None  # an unknown record type: the view answers 404
    cache = current_app.extensions.setdefault("etl_declared_query", {})
    cache_key = (endpoint, record_type.name if record_type is not None else None)
    if cache_key not in cache:
        if callable(doc):
            from etl_app.lookups.registry import providers

            doc = doc(Context(runtime.registry, list(providers(runtime.settings, runtime.registry)), record_type))
        names = _field_names(doc.get("query"))
        if doc.get("body_in_query"):
            names |= _field_names(doc.get("body"))
        cache[cache_key] = frozenset(names)
    return cache[cache_key]


def _field_names(schema: Any) -> set[str]:
    if not (isinstance(schema, type) and issubclass(schema, Schema)):
        return set()
    return {field.data_key or name for name, field in schema._declared_fields.items()}


def openapi_path(rule: str) -> str:
    return _VARIABLE.sub(lambda m: "{" + PATH_NAMES.get(m.group(2), m.group(2)) + "}", rule)


class _Spec:
    def __init__(self, registry: Registry, providers: list[str]) -> None:
        self.plugin = MarshmallowPlugin(schema_name_resolver=lambda schema: None)  # inline but for components
        self.spec = APISpec(
            title="etl_app",
            version=etl_app.__version__,
            openapi_version="3.0.3",
            plugins=[self.plugin],
            info={"description": "Ingest API of the etl_app Celery ETL service."},
        )
        openapi_fields.register(self.plugin)
        self.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
        self.spec.components.schema("Error", schema=ErrorBody)
        self.spec.components.schema("Provider", schema=Provider)
        for record_type in registry:
            self.spec.components.schema(record_type.schema.__name__, schema=record_type.schema)
        self.context = Context(registry, providers)

    def schema(self, schema: Any) -> dict[str, Any]:
        """A schema class, a field or a plain JSON schema as a JSON schema."""
        if isinstance(schema, dict):
            return schema
        if isinstance(schema, fields.Field):
            return self.plugin.converter.field2property(schema)
        return self.plugin.converter.resolve_nested_schema(schema)

    def operation(self, doc: Doc, rule: Any, expanded: bool) -> Doc:
        out: Doc = {k: doc[k] for k in ("summary", "description", "tags") if k in doc}
        if not doc.get("open"):
            out["security"] = SECURITY
        parameters = []
        path_fields = doc.get("path", {})
        for converter, variable in _VARIABLE.findall(rule.rule):
            if expanded and variable == "type_name":
                continue
            name = PATH_NAMES.get(variable, variable)
            field = path_fields.get(name) or {"type": "integer" if converter == "int" else "string"}
            parameters.append({"name": name, "in": "path", "required": True, "schema": self.schema(field)})
        parameters += doc.get("headers", [])
        if "query" in doc:
            parameters += self.plugin.converter.schema2parameters(doc["query"], location="query")
        if parameters:
            out["parameters"] = parameters
        if "body" in doc:
            content = doc["body"] if isinstance(doc["body"], dict) else {"application/json": doc["body"]}
            out["requestBody"] = {
                "required": doc.get("body_required", True),
                "content": {
                    media: {"schema": {**self.schema(schema), **doc.get("body_rules", {})}}
                    for media, schema in content.items()
                },
            }
        out["responses"] = {str(code): self.response(answer) for code, answer in doc["responses"].items()}
        return out

    def response(self, answer: Any) -> Doc:
        if isinstance(answer, dict):  # a reference to a shared answer (BUSY)
            return answer
        if isinstance(answer, str):
            return {"description": answer, "content": {"application/json": {"schema": ERROR}}}
        description, body, *headers = answer
        content = body if isinstance(body, dict) else {"application/json": body}
        out = {"description": description, "content": {m: {"schema": self.schema(s)} for m, s in content.items()}}
        return {**out, "headers": headers[0]} if headers else out


def build_spec(app: Flask, registry: Registry, providers: list[str]) -> dict[str, Any]:
    """The OpenAPI document of every documented rule of ``app``."""
    built = _Spec(registry, providers)
    paths: dict[str, dict[str, Doc]] = {}
    for rule in app.url_map.iter_rules():
        marked = getattr(app.view_functions.get(rule.endpoint), "openapi", None)
        if marked is None:
            continue
        doc, each_record_type = marked
        contexts = [replace(built.context, record_type=t) for t in registry] if each_record_type else [built.context]
        for context in contexts:
            path = openapi_path(rule.rule)
            if context.record_type is not None:
                path = path.replace("{record_type}", context.record_type.name)
            resolved = doc(context) if callable(doc) else doc
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                paths.setdefault(path, {})[method.lower()] = built.operation(resolved, rule, each_record_type)
    for path in sorted(paths):
        built.spec.path(path=path, operations=paths[path])
    return complete(built.spec.to_dict())


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with the shared answers on every operation that can give them."""
    responses = doc.setdefault("components", {}).setdefault("responses", {})
    for shared in (*SHARED.values(), BUSY_RESPONSE):
        responses[shared["name"]] = {
            "description": shared["description"],
            "content": {"application/json": {"schema": ERROR}},
            **({"headers": shared["headers"]} if "headers" in shared else {}),
        }
    for operations in doc.get("paths", {}).values():
        for operation_ in operations.values():
            answers = operation_["responses"]
            codes = ["401", "403", "429", "503"] if operation_.get("security") else []
            for code in codes:
                answers.setdefault(code, {"$ref": f"#/components/responses/{SHARED[code]['name']}"})
            if any(p.get("in") == "query" for p in operation_.get("parameters", [])):
                answers.setdefault(
                    "400", {"description": "a bad query parameter", "content": {"application/json": {"schema": ERROR}}}
                )
    return doc
