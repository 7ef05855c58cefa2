"""An Open-Meteo-like geocoding server on 127.0.0.1, in a thread of the test process, that counts
the requests it gets per ``name`` (tests/lookups/test_lookups.py, tests/e2e/test_geocoding_e2e.py), and
what the end-to-end modules that land tutors through it share (their answers, their checks)."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CITIES = {
    "berlin": {"name": "Berlin", "latitude": 52.52, "longitude": 13.41, "country": "Germany", "country_code": "DE"},
    "lagos": {"name": "Lagos", "latitude": 6.45, "longitude": 3.39, "country": "Nigeria", "country_code": "NG"},
    "lima": {"name": "Lima", "latitude": -12.04, "longitude": -77.03, "country": "Peru", "country_code": "PE"},
}
TIMEZONES = {"berlin": "Europe/Berlin", "lagos": "Africa/Lagos", "lima": "America/Lima"}

# ("json" | "raw" | "stream", (status, body, headers)), ("sleep", (seconds, reply)), ("reset", None)
Reply = tuple[str, Any]


def open_meteo(name: str) -> Reply:
    """What Open-Meteo answers: one result for a known city, no ``results`` key otherwise."""
    key = name.casefold()
    if key in CITIES:
        result = {"id": 1, **CITIES[key], "timezone": TIMEZONES[key], "population": 1000}
        return "json", (200, {"results": [result], "generationtime_ms": 0.5}, {})
    return "json", (200, {"generationtime_ms": 0.5}, {})


class FakeGeocoder:
    """An Open-Meteo-like server whose answer per ``name`` a test chooses (``self.reply``)."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.paths: list[str] = []
        self.times: list[float] = []  # time.time() at each request's arrival
        self.peers: set[int] = set()  # the client ports the requests came from
        self.lock = threading.Lock()
        self.reply: Callable[[str], Reply] = open_meteo
        self.in_flight = self.most_in_flight = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                name = parse_qs(parts.query).get("name", [""])[0]
                with owner.lock:
                    owner.requests[name] += 1
                    owner.paths.append(self.path)
                    owner.times.append(time.time())
                    owner.peers.add(self.client_address[1])
                    owner.in_flight += 1
                    owner.most_in_flight = max(owner.most_in_flight, owner.in_flight)
                try:
                    owner.answer(self, owner.reply(name))
                finally:
                    with owner.lock:
                        owner.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client that gave up
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.requests.values())

    def answer(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        kind, arg = reply
        if kind == "sleep":
            seconds, then = arg
            time.sleep(seconds)
            return self.answer(handler, then)
        if kind == "reset":  # RST instead of an answer
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            handler.close_connection = True
            return None
        status, body, headers = arg
        data = json.dumps(body).encode() if kind == "json" else body
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            handler.send_header(name, value)
        if kind == "stream":  # no length: the body ends when the connection closes
            handler.send_header("Connection", "close")
            handler.close_connection = True
        else:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# What the end-to-end modules share (tests/e2e/test_geocoding_e2e.py, test_lookups_workers_e2e.py).

BERLIN = {"name": "Berlin", "latitude": 52.52, "longitude": 13.41, "country": "Germany", "country_code": "de"}
LIMA = {"name": "Lima", "latitude": -12.04, "longitude": -77.03, "country": "Peru", "country_code": "pe"}
FIELDS = "country, country_code, timezone, latitude, longitude, lookup_status, looked_up_at IS NOT NULL"


def places(unique: str) -> tuple[str, str, str]:
    """Three locations of this test (so no other test's cache answers): two known, one not."""
    return f"Berlin {unique}", f"Lima {unique}", f"Atlantis {unique}"


def answer_for(unique: str) -> Callable[[str], Reply]:
    """Berlin and Lima of :func:`places` found, anything else not found."""
    known = {
        f"berlin {unique}": {**BERLIN, "timezone": "Europe/Berlin"},
        f"lima {unique}": {**LIMA, "timezone": "America/Lima"},
    }

    def reply(name: str) -> Reply:
        if name in known:
            return "json", (200, {"results": [{"id": 1, **known[name]}], "generationtime_ms": 0.4}, {})
        return "json", (200, {"generationtime_ms": 0.4}, {})

    return reply


def submit(api: Any, unique: str, batch: str, locations: tuple[str, ...], count: int = 30) -> list[str]:
    """``count`` tutors over ``locations`` in one batch through ``api`` (tests/helpers/support.py Api),
    landed without a dead letter; returns their ids."""
    from tests.helpers.payloads import tutor

    ids = [f"{unique}-{batch}-{i:02d}" for i in range(count)]
    payload = [tutor(t, location=locations[i % len(locations)]) for i, t in enumerate(ids)]
    r = api.post("tutors/batch", payload)
    assert r.status_code == 202, r.text
    status = api.wait_finished(r.json()["ingestion_id"], timeout=90)
    assert status["counts"]["persisted"] == count and status["counts"]["dead"] == 0, status
    return ids


def stored(sql: Callable[..., Any], ids: list[str]) -> dict[str, tuple]:
    """The tutors' :data:`FIELDS` by id (``sql``: the e2e conftest's fixture)."""
    rows = sql(f"SELECT tutor_id, {FIELDS} FROM tutors WHERE tutor_id = ANY(:ids)", ids=ids)
    return {row[0]: tuple(row[1:]) for row in rows}


def dead_letters(sql: Callable[..., Any], ids: list[str]) -> int:
    return sql("SELECT count(*) FROM dead_letters WHERE natural_key = ANY(:ids)", ids=ids)[0][0]
