"""Bodies over the limit, on the real gunicorn: clients that send the whole body before reading
the answer (``requests``, ``urllib.request``) read the JSON error instead of a broken pipe."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest
import requests

from tests.helpers.payloads import student
from tests.helpers.procs import running_stack
from tests.helpers.support import API_KEY, redis_db

pytestmark = pytest.mark.slow

LIMIT = 1024 * 1024  # ETL_MAX_BODY_BYTES of the web process below
# Far more than the kernel's socket buffers hold, so that a body the server leaves unread
# cannot simply sit in them while the client finishes sending.
BIG = 16 * LIMIT
TOO_LARGE = {"error": "payload_too_large", "message": f"the request body is over the limit of {LIMIT} bytes"}
JSON = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def web(database_url, tmp_path_factory) -> Iterator[str]:
    """Only a web process (no worker): what these tests look at is the HTTP answer."""
    with running_stack(
        database_url, redis_db(13), tmp_path_factory.mktemp("logs"), ETL_MAX_BODY_BYTES=str(LIMIT)
    ) as stack:
        stack.web(workers=1)
        yield stack.web_url


def json_batch(size: int, student_id: str = "bodylimit") -> bytes:
    """A valid JSON batch of one student, padded with whitespace to exactly ``size`` bytes."""
    body = orjson.dumps([student(student_id)])
    return body[:-1] + b" " * (size - len(body)) + b"]"


def ndjson_lines(count: int, prefix: str) -> bytes:
    """``count`` NDJSON students of exactly 64 bytes each, so that the limit falls between two lines."""
    lines = []
    for i in range(count):
        line = orjson.dumps(student(f"{prefix}-{i:06d}", name=""))
        line = orjson.dumps(student(f"{prefix}-{i:06d}", name="x" * (63 - len(line)))) + b"\n"
        assert len(line) == 64
        lines.append(line)
    return b"".join(lines)


def pieces(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A generator body: requests sends it chunked (no Content-Length)."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def urllib_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_requests_sending_a_body_over_the_limit_reads_the_413(web):
    r = requests.post(f"{web}/api/v1/students/batch", data=json_batch(BIG), headers=JSON, timeout=60)
    assert r.status_code == 413
    assert r.json() == TOO_LARGE


def test_urllib_sending_a_body_over_the_limit_reads_the_413(web):
    assert urllib_post(f"{web}/api/v1/students/batch", json_batch(BIG), JSON) == (413, TOO_LARGE)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", json_batch(BIG)),
        # Cut at the limit, this would still be a batch of valid lines: it must not be half accepted.
        ("application/x-ndjson", ndjson_lines(2 * LIMIT // 64, "bodylimit-cut")),
    ],
    ids=["json", "ndjson"],
)
def test_a_chunked_body_over_the_limit_is_413_not_cut_to_the_limit(web, content_type, body):
    headers = {**JSON, "Content-Type": content_type}
    r = requests.post(f"{web}/api/v1/students/batch", data=pieces(body), headers=headers, timeout=60)
    assert r.status_code == 413, r.text
    assert r.json() == TOO_LARGE


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_accepted(web, unique, chunked):
    body = json_batch(LIMIT, f"{unique}-S")
    r = requests.post(f"{web}/api/v1/students/batch", data=pieces(body) if chunked else body, headers=JSON, timeout=60)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1 and r.json()["rejected"] == 0


@pytest.mark.parametrize(
    ("path", "headers", "status", "error"),
    [
        ("students/batch", {"Content-Type": "application/json"}, 401, "unauthorized"),
        ("nosuchtype/batch", JSON, 404, "unknown_record_type"),
        ("students/batch", {**JSON, "Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ],
    ids=["no-key", "unknown-type", "wrong-type"],
)
def test_a_refusal_made_before_the_body_is_read_reaches_a_client_sending_a_large_body(
    web, path, headers, status, error
):
    got_status, body = urllib_post(f"{web}/api/v1/{path}", json_batch(BIG), headers)
    assert got_status == status
    assert body["error"] == error and body["message"]


def test_a_client_that_stops_sending_midway_reads_its_413_and_is_then_disconnected(web):
    """The server does not wait for the rest of a body forever: it answers, then gives up on it."""
    url = urlsplit(web)
    head = (
        "POST /api/v1/students/batch HTTP/1.1\r\n"
        f"Host: {url.netloc}\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {4 * LIMIT}\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=120) as sock:
        sock.sendall(head.encode() + b"[" + b" " * 1000)  # ...and nothing more
        received = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413 ")
    assert orjson.loads(rest.partition(b"\r\n\r\n")[2]) == TOO_LARGE
