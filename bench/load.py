"""HTTP load: client threads posting prepared bodies to the API, over one keep-alive connection
each (:class:`Client`), or over a new connection for every request (:func:`post_once`, as a
client that is not ours would: ``Connection: close``).

Each client thread counts the CPU time it used itself (``time.thread_time``), so the report can
say what the load generator cost per request apart from the benchmark's monitoring threads."""

from __future__ import annotations

import http.client
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import orjson

# Errors on a kept-alive connection that the server closed before reading the request.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Client:
    """POSTs over one HTTP/1.1 connection; reconnects (and retries once) when it went stale."""

    def __init__(self, port: int, api_key: str, timeout: float = 120) -> None:
        self.port, self.timeout = port, timeout
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def post(
        self, path: str, body: bytes, extra: bytes = b"", content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        headers = {**self.headers, "Content-Type": content_type}
        if extra:  # one header line, as post_once takes it
            name, _, value = extra.decode().partition(":")
            headers[name] = value.strip()
        for attempt in (1, 2):
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except STALE:
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def request_head(port: int, api_key: str, path: str, content_type: str = "application/json") -> bytes:
    """The request line and headers of a POST to ``path`` on a new connection, but Content-Length."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {api_key}\r\n"
        f"Content-Type: {content_type}\r\nConnection: close\r\n"
    ).encode()


def post_once(port: int, head: bytes, body: bytes, timeout: float = 120, extra: bytes = b"") -> tuple[int, bytes]:
    """One POST on a new connection (``head`` from :func:`request_head`, then the ``extra``
    header lines): the request in one write, the answer read until the server closes. Less
    Python per request than http.client (no header objects, no email parser): the load
    generator shares the CPUs with the server."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"%s%sContent-Length: %d\r\n\r\n%s" % (head, extra, len(body), body))
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    answer = b"".join(chunks)
    header, _, content = answer.partition(b"\r\n\r\n")
    if not header.startswith(b"HTTP/1."):
        raise http.client.BadStatusLine(header[:80].decode(errors="replace"))
    if b"\r\ntransfer-encoding: chunked" in header.lower():
        content = _dechunk(content)
    return int(header[9:12]), content


def _dechunk(content: bytes) -> bytes:
    out, rest = [], content
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(out)


@dataclass
class LoadResult:
    """What the clients saw: accepted and rejected records, failed requests, latencies in ms."""

    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    client_cpu_seconds: float = 0.0  # CPU time of the client threads themselves

    def add(self, other: LoadResult) -> None:
        self.requests += other.requests
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.failed += other.failed
        self.errors.extend(other.errors[: max(0, 5 - len(self.errors))])
        self.latencies_ms.extend(other.latencies_ms)
        self.client_cpu_seconds += other.client_cpu_seconds


def run_clients(
    port: int,
    api_key: str,
    path: str,
    bodies: Iterable[tuple[bytes, int]],
    threads: int,
    *,
    on_accepted: Callable[[int, str], None] | None = None,
    new_connections: bool = False,
    idempotency_keys: bool = False,
) -> LoadResult:
    """Post every ``(body, records)`` from ``threads`` client threads; wait for all of them.
    ``new_connections``: a new connection for every request, else one kept alive per thread.
    ``idempotency_keys``: each request with an ``Idempotency-Key`` of its own (a new UUID)."""
    source: Iterator[tuple[bytes, int]] = iter(bodies)
    lock = threading.Lock()
    results = [LoadResult() for _ in range(threads)]

    def next_body() -> tuple[bytes, int] | None:
        with lock:
            return next(source, None)

    head = request_head(port, api_key, path)

    def worker(result: LoadResult) -> None:
        cpu_started = time.thread_time()
        client = None if new_connections else Client(port, api_key)
        try:
            while (item := next_body()) is not None:
                body, records = item
                extra = b"Idempotency-Key: %s\r\n" % uuid.uuid4().hex.encode() if idempotency_keys else b""
                t0 = time.perf_counter()
                try:
                    if client:
                        status, answer = client.post(path, body, extra)
                    else:
                        status, answer = post_once(port, head, body, extra=extra)
                except (OSError, http.client.HTTPException) as exc:
                    result.failed += records
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                result.requests += 1
                if status == 202:
                    parsed = orjson.loads(answer)
                    result.accepted += parsed.get("accepted", 0)
                    result.rejected += parsed.get("rejected", 0)
                    if on_accepted:
                        on_accepted(parsed.get("accepted", 0), parsed["ingestion_id"])
                else:
                    result.failed += records
                    if len(result.errors) < 5:
                        result.errors.append(f"HTTP {status}: {answer[:300].decode(errors='replace')}")
        finally:
            if client:
                client.close()
            result.client_cpu_seconds = time.thread_time() - cpu_started

    total = LoadResult(started=time.perf_counter())
    pool = [threading.Thread(target=worker, args=(r,), name=f"client-{i}", daemon=True) for i, r in enumerate(results)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    total.finished = time.perf_counter()
    for r in results:
        total.add(r)
    return total


def batch_bodies(records: Iterable[dict], size: int) -> Iterator[tuple[bytes, int]]:
    """JSON-array bodies of ``size`` records."""
    chunk: list[dict] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield orjson.dumps(chunk), size
            chunk = []
    if chunk:
        yield orjson.dumps(chunk), len(chunk)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
