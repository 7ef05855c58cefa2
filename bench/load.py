"""HTTP load: client threads posting prepared bodies to the API, one keep-alive connection each."""

from __future__ import annotations

import http.client
import math
import threading
import time
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

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
        headers = {**self.headers, "Content-Type": content_type}
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

    def add(self, other: LoadResult) -> None:
        self.requests += other.requests
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.failed += other.failed
        self.errors.extend(other.errors[: max(0, 5 - len(self.errors))])
        self.latencies_ms.extend(other.latencies_ms)


def run_clients(
    port: int,
    api_key: str,
    path: str,
    bodies: Iterable[tuple[bytes, int]],
    threads: int,
    *,
    on_accepted: Callable[[int, str], None] | None = None,
) -> LoadResult:
    """Post every ``(body, records)`` from ``threads`` client threads; wait for all of them."""
    source: Iterator[tuple[bytes, int]] = iter(bodies)
    lock = threading.Lock()
    results = [LoadResult() for _ in range(threads)]

    def next_body() -> tuple[bytes, int] | None:
        with lock:
            return next(source, None)

    def worker(result: LoadResult) -> None:
        client = Client(port, api_key)
        try:
            while (item := next_body()) is not None:
                body, records = item
                t0 = time.perf_counter()
                try:
                    status, answer = client.post(path, body)
                except OSError as exc:
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
            client.close()

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
