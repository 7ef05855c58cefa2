"""The built-in geocoder: a tutor's ``location`` → ``country``, ``country_code``, ``timezone``,
``latitude``, ``longitude``, from a server speaking Open-Meteo's geocoding API
(``GET {ETL_GEOCODER_URL}/v1/search?name=<location>&count=1``; no ``results`` when nothing is
found). Off (every tutor ``skipped``) when ETL_GEOCODER_URL is unset."""

from __future__ import annotations

from typing import Any

from etl_app.lookups.provider import NOT_FOUND, Parsed, Provider

NAME = "geocoder"
READS = ("location",)
FILLS = ("country", "country_code", "timezone", "latitude", "longitude")


def parse(answer: Any) -> Parsed:
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    results = answer.get("results")
    if not results:
        return NOT_FOUND
    first = results[0]
    code = first.get("country_code")
    return {
        "country": first.get("country"),
        "country_code": code.upper() if isinstance(code, str) else None,
        "timezone": first.get("timezone"),
        "latitude": float(first["latitude"]),
        "longitude": float(first["longitude"]),
    }


def geocoder_provider(settings: Any, **overrides: Any) -> Provider:
    """The geocoder as configured (``Settings``: geocoder_url, geocoder_ttl_seconds,
    geocoder_rate, geocoder_max_retries, geocoder_backoff_seconds, geocoder_timeout_seconds: the
    read timeout, geocoder_breaker_failures, geocoder_breaker_cooldown_seconds); ``overrides`` set
    any other :class:`Provider` field. Also the tutors type's lookup declaration
    (``RecordType.lookups``)."""
    values: dict[str, Any] = {
        "name": NAME,
        "base_url": settings.geocoder_url,
        "path": "/v1/search",
        "query": {"name": "{value}", "count": "1"},
        "reads": READS,
        "fills": FILLS,
        "parse": parse,
        "ttl_seconds": settings.geocoder_ttl_seconds,
        "rate": settings.geocoder_rate or None,
        "max_retries": getattr(settings, "geocoder_max_retries", Provider.max_retries),
        "backoff_seconds": getattr(settings, "geocoder_backoff_seconds", Provider.backoff_seconds),
        "read_timeout": (read := getattr(settings, "geocoder_timeout_seconds", Provider.read_timeout)),
        "total_timeout": max(Provider.total_timeout, 3 * read),  # a body dripping in stays bounded
        "breaker_failures": getattr(settings, "geocoder_breaker_failures", Provider.breaker_failures),
        "breaker_cooldown_seconds": getattr(
            settings, "geocoder_breaker_cooldown_seconds", Provider.breaker_cooldown_seconds
        ),
    }
    values.update(overrides)
    return Provider(**values)
