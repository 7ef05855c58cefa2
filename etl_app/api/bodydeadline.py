"""A deadline on the arrival of a request body: a client that trickles it (or stops sending) gets
a 408 and the connection closes, instead of holding the request open for ever.

The rule (like Apache's ``mod_reqtimeout`` ``body=30,MinRate=32768``): the body may pause at most
``ETL_REQUEST_READ_SECONDS`` between two pieces, and it must arrive within
``ETL_REQUEST_READ_SECONDS`` plus one second for every ``ETL_REQUEST_MIN_RATE`` bytes received.
A total time alone would not do: 30 s for a 200 MiB upload asks for 56 Mbit/s; a minimum rate
lets a client on a slow link send any body the limits allow, as long as it keeps sending.

The time is enforced on the socket the server hands over (``gunicorn.socket``): each read waits
at most what is left, and under gevent (the web process's worker, :mod:`etl_app.web.worker`) a
read that gathers its piece from many small sends is cut off at the deadline too. Without such a
socket (a test client), the body is read as before.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask
from werkzeug.exceptions import RequestTimeout

log = logging.getLogger(__name__)

TIMED_OUT = "etl.body_timed_out"  # left in the WSGI environ: the body's rest is not waited for

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BodyTimeout(RequestTimeout):
    """408, the body did not arrive in time; the answer closes the connection."""


_gevent_timeout: Any = None  # gevent's Timeout, once a read found the socket module patched


def _cut_off_after(seconds: float) -> contextlib.AbstractContextManager:
    """Under gevent, a TimeoutError raised into the read after ``seconds`` however much it
    received meanwhile (gunicorn's body reads gather their whole piece); elsewhere nothing, and
    only the socket's timeout bounds each wait. A patched socket module stays patched, so that
    is found out once per process."""
    global _gevent_timeout
    if _gevent_timeout is None and "gevent" in sys.modules:
        from gevent import Timeout, monkey

        if monkey.is_module_patched("socket"):
            _gevent_timeout = Timeout
    return _gevent_timeout(seconds, TimeoutError) if _gevent_timeout is not None else contextlib.nullcontext()


def declared_length(environ: dict[str, Any]) -> int | None:
    """The body's ``Content-Length``; None for a chunked body, or none declared, or a bad one."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    try:
        return int(environ["CONTENT_LENGTH"])
    except (KeyError, ValueError):
        return None


class DeadlineInput:
    """``wsgi.input`` whose reads wait no longer than the body's deadline allows, counted from
    its creation; past it, BodyTimeout, with the reason left in ``environ[TIMED_OUT]``.

    A body of a declared length read to its end answers further reads with nothing at once, as
    the server would, without setting up a deadline for them (:attr:`read_to_end`)."""

    def __init__(self, stream: Any, sock: Any, environ: dict[str, Any], seconds: float, min_rate: int) -> None:
        self._stream, self._sock, self._environ = stream, sock, environ
        self._seconds, self._min_rate = seconds, min_rate
        self._start = time.monotonic()
        self._received = 0
        self._declared = declared_length(environ)

    @property
    def read_to_end(self) -> bool:
        """Whether the whole body of the declared length has been read."""
        return self._declared is not None and self._received >= self._declared

    def _wait(self) -> float:
        """How long the next read may wait; BodyTimeout if the deadline has passed."""
        allowed = self._seconds + (self._received / self._min_rate if self._min_rate > 0 else float("inf"))
        left = self._start + allowed - time.monotonic()
        if left <= 0:
            self._time_out(f"{self._received} bytes in {time.monotonic() - self._start:.0f} s")
        return min(left, self._seconds)

    def _time_out(self, why: str) -> None:
        self._environ[TIMED_OUT] = why
        raise BodyTimeout(
            f"the request body did not arrive in time: it may pause at most {self._seconds:g} s "
            f"(ETL_REQUEST_READ_SECONDS) and must come at {self._min_rate} bytes per second or more "
            "(ETL_REQUEST_MIN_RATE)"
        )

    def _call(self, method: Callable[..., bytes], *args: Any) -> bytes:
        if self.read_to_end or self._environ.get(TIMED_OUT):
            return b""
        wait = self._wait()
        prior = self._sock.gettimeout()
        self._sock.settimeout(wait)
        try:
            with _cut_off_after(wait):
                data = method(*args)
        except TimeoutError:
            self._time_out(f"nothing for {wait:.0f} s after {self._received} bytes")
        finally:
            try:
                self._sock.settimeout(prior)
            except OSError:
                pass
        self._received += len(data)
        return data

    def read(self, size: int | None = None) -> bytes:
        if size is None or size < 0:  # the whole body, piece by piece so that each piece has its deadline
            return b"".join(iter(lambda: self.read(64 * 1024), b""))
        return self._call(self._stream.read, size)

    def readline(self, size: int | None = None) -> bytes:
        return self._call(self._stream.readline, size)

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


class BodyDeadline:
    """WSGI middleware: ``wsgi.input`` bounded by the body's deadline (:class:`DeadlineInput`)."""

    def __init__(self, app: WSGIApp, *, seconds: float, min_rate: int) -> None:
        self.app, self.seconds, self.min_rate = app, seconds, min_rate

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        if sock is None:
            return self.app(environ, start_response)
        environ["wsgi.input"] = DeadlineInput(environ["wsgi.input"], sock, environ, self.seconds, self.min_rate)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if environ.get(TIMED_OUT):
                log.info(
                    "%s %s: the request body did not arrive in time (%s); answered 408",
                    environ.get("REQUEST_METHOD"),
                    environ.get("PATH_INFO"),
                    environ[TIMED_OUT],
                )
                # gunicorn drops an application's Connection header: its response object (whose
                # method start_response is) is told to close, and says so in the answer.
                force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
                if force_close is not None:
                    force_close()
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def init_app(app: Flask, *, seconds: float, min_rate: int) -> None:
    app.wsgi_app = BodyDeadline(app.wsgi_app, seconds=seconds, min_rate=min_rate)
