"""A request id for every request, on its log lines and in its answer (``X-Request-ID``).

A well-formed X-Request-ID sent by the client or a proxy is kept; otherwise one is made: 32
random hex digits (as many random bits as a UUID4 has and more, for a fifth of its cost).
"""

from __future__ import annotations

import logging
import os
import re

from flask import Flask, g, request

from etl_app import logs

HEADER = "X-Request-ID"
_ENVIRON = "HTTP_X_REQUEST_ID"  # the header as the WSGI environ holds it
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}")
log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Register before anything else, so that every later hook logs with the request id."""

    @app.before_request
    def _bind_request_id():
        sent = request.environ.get(_ENVIRON)
        rid = sent if sent and _WELL_FORMED.fullmatch(sent) else os.urandom(16).hex()
        g.request_id = rid
        g.log_context = logs.bind(request_id=rid)

    @app.after_request
    def _answer_request_id(response):
        rid = g.get("request_id")
        if rid:
            response.headers[HEADER] = rid
        return response

    @app.teardown_request
    def _unbind(_exc=None):
        token = g.pop("log_context", None)
        if token is not None:
            try:
                logs.unbind(token)
            except ValueError:  # set in another context (never in a normal request)
                log.debug("request log context already gone")
