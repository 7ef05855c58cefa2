"""``GET /openapi.json``: the OpenAPI 3 document (etl_app.api.spec builds it from the handlers),
and its Swagger UI at ``/docs``."""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Response, abort, current_app, jsonify, send_from_directory

from etl_app.api.spec import build_spec
from etl_app.lookups.registry import providers as lookup_providers

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi_json():
    ext = current_app.extensions
    if "etl_openapi" not in ext:
        runtime = ext["etl"]
        names = list(lookup_providers(runtime.settings, runtime.registry))
        ext["etl_openapi"] = build_spec(current_app, runtime.registry, names)
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
