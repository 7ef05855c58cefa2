"""A lookup provider as a record type declares it: where to ask, what it reads and fills, and the
limits every call to it is held to."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx


class _NotFound:
    """The provider answered, and it knows nothing of the value (cached with the shorter TTL)."""

    _instance: _NotFound | None = None

    def __new__(cls) -> _NotFound:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_FOUND"

    def __reduce__(self) -> str:
        return "NOT_FOUND"


NOT_FOUND = _NotFound()

Parsed = Mapping[str, Any] | _NotFound


def normalise_text(value: Any) -> str | None:
    """Whitespace collapsed and case folded; ``None`` for no value (no lookup is made)."""
    if value is None:
        return None
    text = " ".join(str(value).split()).casefold()
    return text or None


@dataclass(frozen=True)
class Provider:
    """One external lookup.

    The request is ``GET {base_url}{path}?{query}`` where ``{value}`` in ``path`` (percent-encoded,
    slashes included) and in ``query``'s values (form-encoded by httpx) is the only part that comes
    from a record: the scheme, host and port are always ``base_url``'s, and redirects are never
    followed. ``base_url`` unset means the provider is off: every value is ``skipped``.

    ``parse`` turns the decoded JSON answer into the filled fields (a mapping over ``fills``) or
    :data:`NOT_FOUND`; any exception it raises makes the answer ``malformed``.
    """

    name: str
    base_url: str | None
    path: str
    reads: tuple[str, ...]
    fills: tuple[str, ...]
    parse: Callable[[Any], Parsed]
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    normalise: Callable[[Any], str | None] = normalise_text
    ttl_seconds: int = 30 * 86400
    not_found_ttl_seconds: int = 86400
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    total_timeout: float = 15.0  # the whole call, body included (a server that drips bytes)
    max_response_bytes: int = 256 * 1024
    concurrency: int = 4  # calls in flight at once for one chunk
    rate: str | None = "10/second"  # limits' notation, shared by every worker; None: no limit
    breaker_failures: int = 5  # consecutive failures that open the breaker
    breaker_cooldown_seconds: float = 30.0
    max_retries: int = 5  # the caller's budget of retries for one chunk
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 300.0  # also caps a server's Retry-After
    cache_version: str = "1"  # bump when parse changes what a cached answer means

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name:
            raise ValueError(f"a provider's name is non-empty and has no colon: {self.name!r}")
        if set(self.fills) & {"lookup_status"}:
            raise ValueError("lookup_status is the pipeline's own field")
        if self.base_url:
            base = httpx.URL(self.base_url)
            if base.scheme not in ("http", "https") or not base.host:
                raise ValueError(f"{self.name}: base URL must be http(s)://host[:port][/path]: {self.base_url!r}")
        if self.concurrency < 1 or self.max_response_bytes < 1:
            raise ValueError(f"{self.name}: concurrency and max_response_bytes must be at least 1")
        if self.rate:
            from limits import parse_many

            parse_many(self.rate)  # ValueError when malformed

    @property
    def enabled(self) -> bool:
        return bool(self.base_url)

    def value_of(self, record: Mapping[str, Any]) -> Any:
        """The lookup value of a record: its one read field, or the read fields joined by ", "."""
        parts = [record.get(f) for f in self.reads]
        if len(parts) == 1:
            return parts[0]
        present = [str(p) for p in parts if p not in (None, "")]
        return ", ".join(present) or None

    def request_url(self, value: str) -> httpx.URL:
        """The URL asked for ``value``; raises ValueError if it would leave the configured origin."""
        if not self.base_url:
            raise ValueError(f"{self.name} is off")
        base = httpx.URL(self.base_url)
        path = self.path.replace("{value}", quote(value, safe="").replace(".", "%2E"))  # no "..": same path
        url = base.copy_with(path=base.path.rstrip("/") + "/" + path.lstrip("/"))
        params = {k: v.replace("{value}", value) for k, v in self.query.items()}
        url = url.copy_merge_params(params) if params else url
        if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
            raise ValueError(f"{self.name}: a request would leave {base.host}")
        return url

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect_timeout, read=self.read_timeout, write=self.read_timeout, pool=5.0)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number ``attempt + 1``: exponential, capped, jittered (half to full)."""
        full = min(self.backoff_max_seconds, self.backoff_seconds * (2 ** max(0, attempt)))
        return full * random.uniform(0.5, 1.0)

    def empty_fields(self) -> dict[str, Any]:
        return dict.fromkeys(self.fills)
