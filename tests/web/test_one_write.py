"""The web worker's answers (etl_app.web.worker.OneWriteResponse): gunicorn's bytes, the head
sent with a small first piece of the body in one send."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi

from etl_app.web.worker import ONE_WRITE_BYTES, OneWriteResponse, WebWorker

pytestmark = pytest.mark.unit


class Socket:
    def __init__(self) -> None:
        self.sends: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))


def request(method: str = "POST", version: tuple[int, int] = (1, 1)) -> SimpleNamespace:
    return SimpleNamespace(method=method, version=version, should_close=lambda: True, headers=[])


def answer(cls, pieces: list[bytes], headers: list[tuple[str, str]], method: str = "POST") -> list[bytes]:
    sock = Socket()
    resp = cls(request(method), sock, Config())
    resp.start_response("202 ACCEPTED", headers)
    for piece in pieces:
        resp.write(piece)
    resp.close()
    return sock.sends


def same_bytes(sends: list[bytes]) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"", b"".join(sends))  # the one header that moves


SMALL = b'{"accepted":1,"rejected":0}'
CASES = {
    "one piece, its length declared": ([SMALL], [("Content-Type", "application/json"), ("Content-Length", "27")]),
    "pieces, chunked": ([b"[1,", b"2]"], [("Content-Type", "application/json")]),
    "a piece over the bound": ([b"x" * (ONE_WRITE_BYTES + 1)], [("Content-Length", str(ONE_WRITE_BYTES + 1))]),
}


@pytest.mark.parametrize("case", CASES)
def test_the_bytes_are_gunicorns(case):
    pieces, headers = CASES[case]
    assert same_bytes(answer(OneWriteResponse, pieces, headers)) == same_bytes(answer(wsgi.Response, pieces, headers))


def test_the_head_goes_with_a_small_first_piece_and_later_pieces_alone():
    sends = answer(OneWriteResponse, [SMALL], CASES["one piece, its length declared"][1])
    assert len(sends) == 1 and sends[0].startswith(b"HTTP/1.1 202 ACCEPTED\r\n") and sends[0].endswith(SMALL)
    chunked = answer(OneWriteResponse, [b"[1,", b"2]"], [])
    assert len(chunked) == 3 and chunked[0].endswith(b"\r\n\r\n3\r\n[1,\r\n") and chunked[2] == b"0\r\n\r\n"
    big = answer(OneWriteResponse, [b"x" * (ONE_WRITE_BYTES + 1)], [("Content-Length", str(ONE_WRITE_BYTES + 1))])
    assert len(big) == 2 and big[0].endswith(b"\r\n\r\n")


def test_a_head_request_gets_the_head_alone():
    sends = answer(OneWriteResponse, [SMALL], [("Content-Length", "27")], method="HEAD")
    assert len(sends) == 1 and sends[0].endswith(b"\r\n\r\n")


def test_a_piece_that_is_no_bytes_still_fails_as_in_gunicorn_after_the_head_is_sent():
    sock = Socket()
    resp = OneWriteResponse(request(), sock, Config())
    resp.start_response("200 OK", [("Content-Length", "2")])
    with pytest.raises(TypeError):
        resp.write("ok")
    assert resp.headers_sent and len(sock.sends) == 1 and sock.sends[0].endswith(b"\r\n\r\n")


def test_the_worker_has_gunicorn_build_its_answers_with_it(monkeypatch):
    from gunicorn import util

    from etl_app.web.worker import _http_date

    monkeypatch.setattr(wsgi, "Response", wsgi.Response)  # restored after the test
    monkeypatch.setattr(util, "http_date", util.http_date)
    monkeypatch.setattr("etl_app.web.worker.GeventWorker.init_process", lambda self: None)
    WebWorker.init_process(object.__new__(WebWorker))  # a worker as far as init_process goes
    assert wsgi.Response is OneWriteResponse  # wsgi.create's answer class when it is given none
    assert util.http_date is _http_date


def test_the_date_header_is_gunicorns(monkeypatch):
    from etl_app.web import worker

    for now, second in ((1700000000.2, 20), (1700000000.9, 20), (1700000001.1, 21)):
        monkeypatch.setattr("time.time", lambda now=now: now)
        assert worker._http_date() == worker._gunicorn_http_date(now) == f"Tue, 14 Nov 2023 22:13:{second} GMT"
    assert worker._http_date(1.5) == worker._gunicorn_http_date(1.5)
