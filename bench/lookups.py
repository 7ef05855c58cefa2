"""The lookups phase: the geocoder's lookup layer against a local provider that answers in 50 ms.

No app processes: :func:`etl_app.lookups.lookup_chunk` runs in the bench process, in chunks of
500 values as the enrich stage asks them, against a threaded HTTP server speaking Open-Meteo's
answer shape after a fixed delay, and the bench's Redis (keys under a prefix of their own, removed
at the end). No rate limit, so that the figures are the layer's own. Reported:
- cold: ``distinct`` names never seen (a tenth of ``tutors``), so every one is an HTTP call: lookups per second;
- warm: the same names again, all from the cache: lookups per second, and warm ÷ cold;
- a realistic stream: the locations of ``tutors`` generated tutors (many tutors, few cities),
  from an empty cache: values asked, HTTP calls made, and the share of calls the cache and the
  per-chunk de-duplication saved against one call per record.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import redis

from bench.phases import Context
from bench.progress import say
from etl_app.config import Settings
from etl_app.local.generate import generate
from etl_app.lookups import lookup_chunk
from etl_app.lookups.geocoder import geocoder_provider

CHUNK = 500


class SlowGeocoder:
    """Answers every name (a result for any name but "Remote") after ``latency`` seconds."""

    def __init__(self, latency: float) -> None:
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                name = parse_qs(urlsplit(self.path).query).get("name", [""])[0]
                with owner.lock:
                    owner.requests[name] += 1
                time.sleep(latency)
                found = {"name": name, "latitude": 1.5, "longitude": 2.5, "country": "X", "country_code": "XX",
                         "timezone": "UTC"}  # fmt: skip
                body = orjson.dumps({"results": [found]} if name != "Remote" else {})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.requests.values())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _ask(provider, values: list[str], client: redis.Redis, http: httpx.Client, prefix: str) -> tuple[float, int]:
    """Seconds to look ``values`` up in chunks, and how many came back failed."""
    started = time.perf_counter()
    failed = 0
    for at in range(0, len(values), CHUNK):
        result = lookup_chunk(provider, values[at : at + CHUNK], redis=client, http_client=http, key_prefix=prefix)
        failed += result.failed
    return time.perf_counter() - started, failed


def run_lookups(ctx: Context, tutors: int, distinct: int | None = None, latency: float = 0.05) -> dict[str, Any]:
    """``distinct``: the names of the cold and warm runs (default: a tenth of ``tutors``, so 2,000
    for the default 20,000, and a few seconds for ``--quick``)."""
    distinct = distinct or max(10, tutors // 10)
    server = SlowGeocoder(latency)
    client = redis.Redis.from_url(ctx.redis_url)
    prefix = f"bench:lookups:{uuid.uuid4().hex[:8]}:"
    provider = geocoder_provider(Settings(geocoder_url=server.url, geocoder_rate=""))
    try:
        with httpx.Client(follow_redirects=False) as http:
            names = [f"Town {i:05d}" for i in range(distinct)]
            say(f"lookups: {distinct:,} names never seen (cold cache), {latency * 1000:.0f} ms each")
            cold, cold_failed = _ask(provider, names, client, http, prefix)
            cold_calls = server.total
            say("lookups: the same names again (warm cache)")
            warm, warm_failed = _ask(provider, names, client, http, prefix)
            warm_calls = server.total - cold_calls
            locations = [t.get("location") or "" for t in generate("tutors", tutors, ctx.seed, id_prefix="lk-")]
            before = server.total
            say(f"lookups: the locations of {tutors:,} generated tutors, from an empty cache")
            stream_prefix = prefix + "stream:"
            stream, _ = _ask(provider, locations, client, http, stream_prefix)
            stream_calls = server.total - before
    finally:
        server.close()
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    asked = sum(1 for v in locations if v.strip())
    per_chunk = sum(len({v.strip().casefold() for v in locations[i : i + CHUNK] if v.strip()})
                    for i in range(0, len(locations), CHUNK))  # fmt: skip
    return {
        "latency_ms": round(latency * 1000),
        "concurrency": provider.concurrency,
        "cold": {
            "lookups": distinct,
            "seconds": round(cold, 2),
            "lookups_per_s": round(distinct / cold, 1),
            "http_calls": cold_calls,
            "failed": cold_failed,
        },
        "warm": {
            "lookups": distinct,
            "seconds": round(warm, 3),
            "lookups_per_s": round(distinct / warm, 1),
            "http_calls": warm_calls,
            "failed": warm_failed,
        },
        "warm_over_cold": round(cold / warm, 1) if warm else None,
        "stream": {
            "tutors": tutors,
            "with_a_location": asked,
            "distinct_per_chunk_summed": per_chunk,
            "http_calls": stream_calls,
            "seconds": round(stream, 2),
            "calls_saved_share": round(1 - stream_calls / asked, 4) if asked else None,
        },
    }
