"""Request bodies over the limit: a 413 that every client reads, chunked bodies included."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import flask
from flask import Flask
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import ClosingIterator, LimitedStream

from etl_app.api import bodydeadline

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DRAIN_FACTOR = 2  # times the request's limit
DRAIN_MIN_BYTES = 64 * MIB
_PIECE = 64 * 1024
_LIMIT_KEY = "etl.max_content_length"  # the request's limit, left in the WSGI environ for the drain

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _LimitedToMax(LimitedStream):
    """Werkzeug's stream for a body limited to a maximum, which notices a body that goes on past it.

    Werkzeug's ``LimitedStream.readall`` stops reading at the limit without looking further, so
    a chunked body (no ``Content-Length``) over the limit came through cut to the limit: a JSON
    batch failed as invalid JSON, and an NDJSON batch cut between two lines was accepted in part.
    This one reads one byte past the limit and answers 413 if it is there.
    """

    def __init__(self, stream: Any, limit: int) -> None:
        super().__init__(stream, limit, is_max=True)
        self._source = stream

    def readall(self) -> bytes:
        data = super().readall()
        if self.is_exhausted:
            try:
                more = self._source.read(1)
            except (OSError, ValueError):
                raise ClientDisconnected() from None  # what Werkzeug raises when a read fails
            if more:
                raise RequestEntityTooLarge()
        return data


class Request(flask.Request):
    """Flask's request, whose stream refuses a chunked body over the limit instead of cutting it."""

    @cached_property
    def stream(self) -> Any:
        if self.content_length is None and "wsgi.input_terminated" in self.environ and not self.shallow:
            limit = self.max_content_length
            if limit is not None:
                return _LimitedToMax(self.environ["wsgi.input"], limit)
        return super().stream


def _declared_length(environ: dict[str, Any]) -> int | None:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None


def _has_body(environ: dict[str, Any]) -> bool:
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return chunked or (_declared_length(environ) or 0) > 0


class DrainUnreadBody:
    """WSGI middleware: once the answer is written, discard what the app left of the request body.

    Why: a body over the limit with a ``Content-Length`` is refused from the header, unread, and
    so is the body of every request refused before its view reads it (401, 404, 415). gunicorn,
    once the answer is written, discards at most 64 KiB of an unread body within 5 s before it
    keeps the connection alive (``Parser.finish_body``), and at most another 64 KiB within 2 s
    when it closes it (``util.close_graceful``); then it closes the socket with the rest unread,
    the kernel resets the connection, and a client that sends its whole body before reading the
    answer gets a broken pipe or a connection reset instead of the JSON error (``urllib.request``
    always; ``requests``, whose urllib3 reads the answer after a broken pipe, when the reset comes
    first). Discarding the rest here lets such a client finish sending and read it.

    Bounds: at most ``max(2 × the request's limit, 64 MiB)`` bytes, arriving as fast as a body
    must (:mod:`etl_app.api.bodydeadline`: no pause over ``ETL_REQUEST_READ_SECONDS``, and
    ``ETL_REQUEST_MIN_RATE`` bytes a second on average after those first seconds), so a client
    that stops or trickles holds the connection no longer than a slow body would. A body
    declared larger than that is not read at all. Past either bound the connection closes as
    before and the client sees the reset. The request's limit is ``request.max_content_length``,
    so an endpoint that raises it for its own requests (uploads, ``ETL_MAX_UPLOAD_BYTES``) gets a
    drain to match, also when it refuses a file declared over its limit.

    Only where the server hands over its socket (``gunicorn.socket``), which is what bounds the
    time, and only for HTTP/1.x. A body of a declared length that the app read to its end costs
    nothing more.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        seconds: float,
        min_rate: int,
        factor: int = DRAIN_FACTOR,
        min_bytes: int = DRAIN_MIN_BYTES,
    ) -> None:
        self.app, self.seconds, self.min_rate = app, seconds, min_rate
        self.factor, self.min_bytes = factor, min_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        if sock is None or not environ.get("SERVER_PROTOCOL", "").startswith("HTTP/1.") or not _has_body(environ):
            return self.app(environ, start_response)
        body = environ["wsgi.input"]
        return ClosingIterator(self.app(environ, start_response), lambda: self._drain(environ, body, sock))

    def _budget(self, environ: dict[str, Any]) -> int:
        limit = environ.get(_LIMIT_KEY)
        return max(self.factor * limit, self.min_bytes) if limit else self.min_bytes

    def _drain(self, environ: dict[str, Any], body: Any, sock: Any) -> None:
        if environ.get(bodydeadline.TIMED_OUT):
            self._give_up(environ, "it did not arrive in time")
            return
        read = environ.get("wsgi.input")
        if isinstance(read, bodydeadline.DeadlineInput) and read.read_to_end:
            return
        budget = self._budget(environ)
        declared = _declared_length(environ)
        if declared is None or declared > budget:
            self._give_up(environ, f"{environ.get('CONTENT_LENGTH')} bytes declared, over {budget}")
            return
        drain_environ: dict[str, Any] = {}
        rest = bodydeadline.DeadlineInput(body, sock, drain_environ, self.seconds, self.min_rate)
        drained = 0
        try:
            while data := rest.read(min(_PIECE, budget + 1 - drained)):
                drained += len(data)
                if drained > budget:
                    self._give_up(environ, f"over {budget} bytes")
                    return
        except Exception as exc:  # noqa: BLE001 - a timeout, a reset or bad chunk framing: the server closes
            self._give_up(environ, drain_environ.get(bodydeadline.TIMED_OUT) or f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _give_up(environ: dict[str, Any], why: str) -> None:
        log.info(
            "%s %s: the unread request body was not discarded (%s); the connection closes",
            environ.get("REQUEST_METHOD"),
            environ.get("PATH_INFO"),
            why,
        )


def init_app(app: Flask) -> None:
    settings = app.extensions["etl"].settings
    app.request_class = Request
    deadline = {"seconds": settings.request_read_seconds, "min_rate": settings.request_min_rate}
    bodydeadline.init_app(app, **deadline)  # inside the drain: the drain reads the body's rest itself
    app.wsgi_app = DrainUnreadBody(app.wsgi_app, **deadline)

    @app.after_request
    def _leave_limit_for_the_drain(response):
        request = flask.request._get_current_object()
        read = request.environ.get("wsgi.input")
        if not (isinstance(read, bodydeadline.DeadlineInput) and read.read_to_end):  # else no drain
            request.environ[_LIMIT_KEY] = request.max_content_length
        return response
