"""Hostile slow clients against a running web process: how long ``/health`` and a submit take
while many sockets trickle their headers or their bodies.

``python -m bench.slow_clients URL API_KEY [--sockets 100] [--seconds 20]`` opens the sockets
(a quarter each: headers that never end; a sign-in form body, without a key; a JSON batch body
with the key; a chunked body with the key), each sending a few bytes every couple of seconds,
then times ``GET /health`` and ``POST /api/v1/students`` once a second and prints the latencies,
and what the tricklers got back (an answer such as 408, or the connection closed).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

KINDS = ("headers", "form-body", "json-body", "chunked-body")


def _head(kind: str, host: str, api_key: str) -> bytes:
    """What a trickler sends at once: all of its request but the last of its headers or body."""
    if kind == "headers":
        return f"GET /health HTTP/1.1\r\nHost: {host}\r\n".encode()
    if kind == "form-body":
        return (
            f"POST /ui/signin HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 400000\r\n\r\nkey="
        ).encode()
    if kind == "json-body":
        return (
            f"POST /api/v1/students/batch HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {api_key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 400000\r\n\r\n["
        ).encode()
    return (
        f"POST /api/v1/students/batch HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {api_key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n"
    ).encode()


def _drip(kind: str) -> bytes:
    """The few bytes a trickler adds every interval."""
    if kind == "headers":
        return b"X-a: b\r\n"
    if kind == "chunked-body":
        return b"1\r\n \r\n"
    return b"    "


@dataclass
class Trickler:
    """One socket sending its request a few bytes at a time, for as long as the server reads it."""

    kind: str
    sock: socket.socket
    answer: bytes = b""  # what the server sent back (its status line first), if anything
    closed: bool = False  # the server closed the connection (or reset it)

    def drip(self) -> None:
        if self.closed:
            return
        try:
            self.sock.sendall(_drip(self.kind))
        except OSError:
            self.closed = True

    def poll(self) -> None:
        """Read what the server sent, without waiting."""
        if self.closed:
            return
        try:
            self.sock.setblocking(False)
            while data := self.sock.recv(65536):
                self.answer += data
            self.closed = True  # an empty read: the server closed
        except BlockingIOError:
            pass
        except OSError:
            self.closed = True

    @property
    def status(self) -> int | None:
        line = self.answer.partition(b"\r\n")[0].split()
        return int(line[1]) if len(line) >= 2 and line[1].isdigit() else None


@dataclass
class Crowd:
    tricklers: list[Trickler] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def counts(self) -> dict[str, int]:
        for t in self.tricklers:
            t.poll()
        out = {"open": sum(not t.closed and t.status is None for t in self.tricklers)}
        for t in self.tricklers:
            key = f"answered {t.status}" if t.status else ("closed" if t.closed else None)
            if key:
                out[key] = out.get(key, 0) + 1
        return out


@contextmanager
def trickling(url: str, api_key: str, sockets: int = 100, interval: float = 2.0) -> Iterator[Crowd]:
    """``sockets`` tricklers (the kinds in turn), dripping every ``interval`` seconds until the end."""
    parts = urlsplit(url)
    crowd = Crowd()
    try:
        for i in range(sockets):
            kind = KINDS[i % len(KINDS)]
            sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
            sock.sendall(_head(kind, parts.netloc, api_key))
            crowd.tricklers.append(Trickler(kind, sock))

        def drip() -> None:
            while not crowd.stop.wait(interval):
                for t in crowd.tricklers:
                    t.drip()

        thread = threading.Thread(target=drip, name="tricklers", daemon=True)
        thread.start()
        yield crowd
    finally:
        crowd.stop.set()
        for t in crowd.tricklers:
            t.sock.close()


def submit(url: str, api_key: str, student_id: str, timeout: float = 10) -> requests.Response:
    """A normal authenticated submit of one student."""
    return requests.post(
        f"{url}/api/v1/students",
        json={"student_id": student_id, "name": "Sam Student", "grade_level": 9},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=timeout,
    )


def _timed(call) -> tuple[float, str]:
    start = time.monotonic()
    try:
        outcome = str(call().status_code)
    except requests.RequestException as exc:
        outcome = type(exc).__name__
    return time.monotonic() - start, outcome


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slow_clients", description=__doc__)
    p.add_argument("url")
    p.add_argument("api_key")
    p.add_argument("--sockets", type=int, default=100)
    p.add_argument("--seconds", type=float, default=20)
    args = p.parse_args(argv)
    health, submits = [], []
    with trickling(args.url, args.api_key, args.sockets) as crowd:
        time.sleep(1)
        end = time.monotonic() + args.seconds
        n = 0
        while time.monotonic() < end:
            n += 1
            h = _timed(lambda: requests.get(f"{args.url}/health", timeout=10))
            s = _timed(lambda: submit(args.url, args.api_key, f"slow-clients-{time.time_ns()}"))
            health.append(h)
            submits.append(s)
            print(
                f"t={args.seconds - (end - time.monotonic()):5.1f}s health {h[0]:6.3f}s {h[1]:>8}  "
                f"submit {s[0]:6.3f}s {s[1]:>8}  tricklers {crowd.counts()}",
                flush=True,
            )
            time.sleep(max(0.0, 1 - h[0] - s[0]))
    for name, got in (("health", health), ("submit", submits)):
        times = sorted(t for t, _ in got)
        print(
            f"{name}: n={len(times)} median {statistics.median(times):.3f}s max {times[-1]:.3f}s "
            f"outcomes {sorted({o for _, o in got})}"
        )


if __name__ == "__main__":
    main()
