"""Reads of a request body under its deadline (etl_app.api.bodydeadline) and the drain of what
the app left unread (etl_app.api.bodylimit), on a socket the server hands over."""

from __future__ import annotations

import io
from typing import Any

import pytest

from etl_app.api.bodydeadline import BodyDeadline, DeadlineInput, declared_length
from etl_app.api.bodylimit import DrainUnreadBody

pytestmark = pytest.mark.unit


class Socket:
    """What the body's deadline uses of the server's socket: its timeout, counted."""

    def __init__(self) -> None:
        self.timeout: float | None = None
        self.settings = 0

    def gettimeout(self) -> float | None:
        return self.timeout

    def settimeout(self, value: float | None) -> None:
        self.settings += 1
        self.timeout = value


class Body(io.BytesIO):
    """The server's body stream, its reads counted."""

    reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return super().read(size)


def environ(body: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/x",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": Body(body),
        "gunicorn.socket": Socket(),
        **extra,
    }


def test_the_declared_length_is_the_content_length_unless_chunked_or_bad():
    assert declared_length({"CONTENT_LENGTH": "12"}) == 12
    assert declared_length({"CONTENT_LENGTH": "12", "HTTP_TRANSFER_ENCODING": "chunked"}) is None
    assert declared_length({"CONTENT_LENGTH": "x"}) is None
    assert declared_length({}) is None


def test_a_body_read_to_its_declared_end_answers_further_reads_at_once():
    env = environ(b"hello")
    body, sock = env["wsgi.input"], env["gunicorn.socket"]
    read = DeadlineInput(body, sock, env, 5, 1000)
    assert not read.read_to_end
    assert read.read(3) + read.read(10) == b"hello"
    assert read.read_to_end
    reads, settings = body.reads, sock.settings
    assert read.read(10) == b"" and read.readline() == b"" and read.read() == b""
    assert (body.reads, sock.settings) == (reads, settings)  # neither the stream nor the socket touched


def test_a_chunked_body_is_read_until_the_stream_ends():
    env = environ(b"hello", HTTP_TRANSFER_ENCODING="chunked")
    body = env["wsgi.input"]
    read = DeadlineInput(body, env["gunicorn.socket"], env, 5, 1000)
    assert read.read() == b"hello" and not read.read_to_end
    reads = body.reads
    assert read.read(10) == b"" and body.reads == reads + 1


def _served(app_reads: int | None, body: bytes) -> dict[str, Any]:
    """Serve one request through the deadline and the drain; the app reads ``app_reads`` bytes
    (None: the whole body)."""
    env = environ(body)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        stream.read() if app_reads is None else stream.read(app_reads)
        start_response("200 OK", [])
        return [b"ok"]

    served = DrainUnreadBody(BodyDeadline(app, seconds=5, min_rate=1000), seconds=5, min_rate=1000)
    answer = served(env, lambda status, headers, exc_info=None: None)
    assert b"".join(answer) == b"ok"
    answer.close()
    return env


def test_the_drain_reads_nothing_after_an_app_that_read_the_whole_body():
    env = _served(None, b"x" * 100)
    assert env["wsgi.input"]._stream.reads == 1  # the app's one read; no empty read by the drain


def test_the_drain_discards_what_the_app_left_unread():
    env = _served(10, b"x" * 100)
    raw = env["wsgi.input"]._stream
    assert raw.tell() == 100 and raw.reads > 1
