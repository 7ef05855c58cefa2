"""Every error is a JSON body ``{error, message}`` (plus ``errors`` for field errors)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from etl_app import errors
from etl_app.web.context import ApiError

log = logging.getLogger(__name__)


def error_response(status: int, error: str, message: str, **extra: Any):
    response = jsonify({"error": error, "message": message, **extra})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        response = error_response(exc.status, exc.error, exc.message, **exc.extra)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        if exc.code == 413:
            return error_response(
                413,
                "payload_too_large",
                f"the request body is over the limit of {request.max_content_length} bytes",
            )
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        for name, value in exc.get_headers():  # e.g. the Allow of a 405
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if errors.classify(exc) is errors.DatabaseUnavailable:  # nothing was stored: the client may retry
            log.warning("database unavailable: %s", exc)
            response = error_response(
                503, "database_unavailable", "the database is unavailable; nothing was stored, try again shortly"
            )
            response.headers["Retry-After"] = "5"
            return response
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")
