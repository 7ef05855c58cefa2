"""A local OpenLineage endpoint for tests: it collects the run events POSTed to it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WAIT = 20.0  # seconds: an earlier test's events to a dead endpoint may be ahead in the queue


class LineageServer:
    """Collects the JSON bodies POSTed to it (with path and headers); answers 201 as Marquez does."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.arrived = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # noted before the answer: the sender's next event, sent once this one is answered,
                # is handled by another thread and must not be noted first
                with server.arrived:
                    server.requests.append((self.path, dict(self.headers)))
                    server.events.append(json.loads(body))
                    server.arrived.notify_all()
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = WAIT) -> list[dict]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.events) >= n, timeout)
            return list(self.events)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
