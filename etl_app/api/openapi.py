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
<body>
<div id="api-key" style="padding:8px 20px;font-family:sans-serif;border-bottom:1px solid #ddd">
<span id="key-status">No API key set.</span>
<button type="button" id="change-key">Change key</button>
<button type="button" id="forget-key">Forget key</button>
<small>The key is kept for this tab only, until it is closed.</small></div>
<div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/docs.js"></script>
<noscript>The machine-readable document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body></html>"""

# The page's own script (no inline script: the page's Content-Security-Policy forbids it). The key
# lives in sessionStorage: this tab only, gone when it closes, and the bar above Swagger UI
# changes or forgets it (earlier versions kept it in localStorage for good: removed there).
DOCS_SCRIPT = """"use strict";
(function () {
  var STORE = "etlApiKey";
  localStorage.removeItem(STORE);
  function key() { return sessionStorage.getItem(STORE) || ""; }
  function ask() {
    var given = window.prompt("API key (Bearer) for this etl_app, kept for this tab only");
    if (given !== null && given.trim()) sessionStorage.setItem(STORE, given.trim());
  }
  function load() {
    document.getElementById("key-status").textContent = key() ? "An API key is set for this tab." : "No API key set.";
    window.SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui", requestInterceptor: function (req) {
      if (key()) req.headers.Authorization = "Bearer " + key();
      return req;
    }});
  }
  document.getElementById("change-key").addEventListener("click", function () { ask(); load(); });
  document.getElementById("forget-key").addEventListener("click", function () {
    sessionStorage.removeItem(STORE);
    load();
  });
  if (!key()) ask();
  load();
})();
"""

# /docs: Swagger UI's files and the page's script only; inline styles (Swagger UI sets them),
# its SVG icons as data: URLs; never framed.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@bp.get("/docs")
def docs():
    response = Response(DOCS_PAGE, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/docs/assets/<name>")
def docs_asset(name: str):
    if name == "docs.js":
        return Response(DOCS_SCRIPT, mimetype="text/javascript")
    if name not in DOCS_FILES:
        abort(404)
    return send_from_directory(DOCS_ASSETS, name, max_age=86400)
