"""Hostile slow clients against the web process started with the Procfile's own command line:
they do not starve the others, they are answered 408 (or closed) once their time is up, and a
client that sends a whole upload over the limit before reading reads its 413."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import requests

from bench.slow_clients import submit, trickling
from etl_app.local.processes import free_port

from tests.helpers.procs import running_stack, wait_answering, wait_until
from tests.helpers.support import API_KEY, redis_db

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
UPLOAD_LIMIT = 40 * MIB  # ETL_MAX_UPLOAD_BYTES of the web process below
READ_SECONDS = 3  # its ETL_REQUEST_READ_SECONDS and ETL_REQUEST_HEADER_SECONDS: tricklers are cut off soon
AUTH = {"Authorization": f"Bearer {API_KEY}"}
BOUNDARY = "slow-clients-boundary"
TOO_LARGE = {
    "error": "payload_too_large",
    "message": f"the file is over the upload limit of {UPLOAD_LIMIT} bytes (40 MiB, ETL_MAX_UPLOAD_BYTES); "
    "split it into smaller files",
}


@pytest.fixture(scope="module")
def web(database_url, tmp_path_factory) -> Iterator[str]:
    """The Procfile's web line (no worker: what these tests look at is the HTTP answer)."""
    env = {
        "ETL_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "ETL_REQUEST_READ_SECONDS": str(READ_SECONDS),
        "ETL_REQUEST_HEADER_SECONDS": str(READ_SECONDS),
    }
    with running_stack(database_url, redis_db(13), tmp_path_factory.mktemp("logs"), **env) as stack:
        port = free_port()
        proc = stack.procfile("web", WEB_PORT=str(port))
        stack.web_url = f"http://127.0.0.1:{port}"
        wait_answering(proc, f"{stack.web_url}/health")
        yield stack.web_url


def multipart() -> tuple[bytes, bytes, dict[str, str]]:
    """The head and the tail of a form around the content of its field ``file``, and its headers."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="students.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    return (
        head,
        f"\r\n--{BOUNDARY}--\r\n".encode(),
        {**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )


def test_health_and_a_submit_are_answered_while_100_clients_trickle_then_these_are_cut_off(web, unique):
    with trickling(web, API_KEY, sockets=100) as crowd:
        # The client timeouts only keep a starved server from hanging the test.
        assert requests.get(f"{web}/health", timeout=10).status_code == 200
        r = submit(web, API_KEY, f"{unique}-S")
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == 1

        def all_done() -> bool:
            crowd.counts()
            return all(t.closed or t.status for t in crowd.tricklers)

        wait_until(all_done, 60, what="every trickler to be answered or closed")
        by_kind: dict[str, set] = {}
        for t in crowd.tricklers:
            by_kind.setdefault(t.kind, set()).add(t.status)
        # Unfinished headers: the connection closes. Unfinished bodies: a 408 with the error body.
        assert by_kind == {"headers": {None}, "form-body": {408}, "json-body": {408}, "chunked-body": {408}}
        answer = next(t for t in crowd.tricklers if t.kind == "json-body").answer
        assert b"Connection: close\r\n" in answer
        assert b'"error":"request_timeout"' in answer and b"ETL_REQUEST_READ_SECONDS" in answer


def test_an_upload_sent_slowly_but_steadily_is_stored(web):
    """Longer in all than ETL_REQUEST_READ_SECONDS, but never pausing that long and above the minimum
    rate: a client on a slow link. Sent chunked (no Content-Length)."""
    rows = b"".join(b"%d-slow,Sam Student,9\n" % i for i in range(40_000))
    head, tail, headers = multipart()
    body = head + b"student_id,name,grade_level\n" + rows + tail
    pieces = [body[i : i + 64 * 1024] for i in range(0, len(body), 64 * 1024)]

    def slowly() -> Iterator[bytes]:
        for piece in pieces:
            yield piece
            time.sleep((READ_SECONDS + 2) / len(pieces))

    r = requests.post(f"{web}/api/v1/students/upload", data=slowly(), headers=headers, timeout=60)
    assert r.status_code == 202, r.text
    assert r.json()["upload"]["format"] == "csv"


def over_the_limit() -> tuple[bytes, dict[str, str]]:
    """A form with a file over the limit, larger than the 64 MiB any refused body was drained up
    to, but within twice the upload limit."""
    head, tail, headers = multipart()
    return head + b"x" * (70 * MIB) + tail, headers


def test_requests_sending_an_upload_over_the_limit_whole_reads_the_413(web):
    body, headers = over_the_limit()
    r = requests.post(f"{web}/api/v1/students/upload", data=body, headers=headers, timeout=60)
    assert r.status_code == 413
    assert r.json() == TOO_LARGE


def test_urllib_sending_an_upload_over_the_limit_whole_reads_the_413(web):
    body, headers = over_the_limit()
    request = urllib.request.Request(f"{web}/api/v1/students/upload", data=body, headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=60)
    with raised.value as error:
        assert error.code == 413
        assert json.loads(error.read()) == TOO_LARGE
