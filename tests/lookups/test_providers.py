"""Lookup providers for an operator: ``GET /api/v1/providers``, ``POST .../<provider>/reset``,
their ``etl_lookup_*`` families on /metrics, and ``etl-app providers [reset NAME]``, on the real
Redis counters (bumped by lookups against a small local server, or by the metrics functions)
and the real audit trail."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis
import sqlalchemy as sa

from etl_app.config import Settings
from etl_app.lookups import lookup_chunk
from etl_app.lookups.geocoder import geocoder_provider
from etl_app.lookups.metrics import breaker_for, record
from etl_app.lookups.provider import Provider
from etl_app.lookups.registry import providers
from etl_app.roles import key_id

from tests.helpers.support import API_KEY

READER, OPERATOR = "reader-key-providers", "operator-key-providers"
GEOCODER_URL = "http://scraper:s3cret@geo.example:8080/base"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def app(make_app):
    return make_app(
        api_keys=(API_KEY, f"{READER}:reader", f"{OPERATOR}:operator"), geocoder_url=GEOCODER_URL, geocoder_rate=""
    )


@pytest.fixture
def cache(api_redis_url) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(api_redis_url)
    yield client
    client.close()


def geocoder(url: str = GEOCODER_URL, **overrides):
    return geocoder_provider(Settings(geocoder_url=url, geocoder_rate=""), **overrides)


def open_breaker(cache: redis.Redis, prefix: str) -> None:
    provider = geocoder()
    breaker = breaker_for(cache, prefix, provider)
    for _ in range(provider.breaker_failures):
        breaker.failure()
    assert breaker.state().state == "open"


def audit_rows(engine, **where) -> list[dict]:
    clauses = " AND ".join(f"{name} = :{name}" for name in where)
    with engine.connect() as conn:
        return [
            dict(r) for r in conn.execute(sa.text(f"SELECT * FROM audit WHERE {clauses} ORDER BY id"), where).mappings()
        ]


def geocoder_entry(client, key: str = API_KEY) -> dict:
    r = client.get("/api/v1/providers", headers=bearer(key))
    assert r.status_code == 200, r.json
    [entry] = [p for p in r.json["providers"] if p["name"] == "geocoder"]
    return entry


class Server:
    """Answers Open-Meteo's way: Berlin is found, anything else not; ``boom`` is a 500, ``slow`` a 429."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = parse_qs(urlsplit(self.path).query).get("name", [""])[0]
                status, body = 200, {}
                if name == "berlin":
                    body = {"results": [{"country": "Germany", "country_code": "de", "timezone": "Europe/Berlin"}]}
                    body["results"][0].update(latitude=52.5, longitude=13.4)
                elif name == "boom":
                    status = 500
                elif name == "slow":
                    status = 429
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def test_the_providers_are_the_geocoder_and_those_record_types_declare():
    other = Provider(name="weather", base_url=None, path="/x", reads=("a",), fills=("b",), parse=lambda a: a)
    types = [
        SimpleNamespace(name="plain"),  # no lookups at all
        SimpleNamespace(name="t1", lookups=(geocoder_provider,)),  # a callable of the settings
        SimpleNamespace(name="t2", lookups=(other, lambda settings: other)),
    ]
    found = providers(Settings(geocoder_url="http://geo.example"), types)
    assert list(found) == ["geocoder", "weather"]
    assert found["geocoder"].base_url == "http://geo.example" and found["weather"] is other
    assert list(providers(Settings(), [])) == ["geocoder"] and not providers(Settings(), [])["geocoder"].enabled


def test_the_list_shows_real_lookups_counters_and_breaker(app, server, cache, broker_prefix):
    provider = geocoder(server.url, backoff_seconds=0.1)
    with httpx.Client() as http:
        # the failures apart from the answers: an answer clears the breaker's count of failures
        for values in (["Berlin", "Atlantis", None], ["boom"], ["slow"], ["berlin", "atlantis"]):
            lookup_chunk(provider, values, redis=cache, http_client=http, key_prefix=broker_prefix)
    client = app.test_client()
    entry = geocoder_entry(client)
    assert entry == {
        "name": "geocoder",
        "enabled": True,
        "host": "geo.example:8080",  # the app's configuration; never its credentials or path
        "rate": None,
        "ttl_seconds": 30 * 86400,
        "calls": {"found": 1, "not_found": 1, "failed": 2, "total": 4},
        "cache": {"hit": 2, "miss": 4, "hit_ratio": round(2 / 6, 4)},
        "errors": {"rate_limited": 1, "server_error": 1},
        "rate_limited": 1,
        "breaker": {"state": "closed", "open_for_seconds": 0.0, "failures": 1, "opened_count": 0},
    }
    assert "s3cret" not in client.get("/api/v1/providers", headers=bearer(API_KEY)).get_data(as_text=True)


def test_an_open_breaker_is_listed_open_and_an_operator_resets_it(app, cache, broker_prefix, engine):
    record(cache, broker_prefix, "geocoder", Counter({"calls:failed": 5, "errors:timeout": 5, "cache:miss": 5}))
    open_breaker(cache, broker_prefix)
    client = app.test_client()
    before = geocoder_entry(client, READER)
    assert before["breaker"]["state"] == "open" and before["breaker"]["opened_count"] == 1
    assert 0 < before["breaker"]["open_for_seconds"] <= 30
    assert before["errors"] == {"timeout": 5} and before["cache"] == {"hit": 0, "miss": 5, "hit_ratio": 0.0}

    r = client.post("/api/v1/providers/geocoder/reset", headers={**bearer(OPERATOR), "X-Request-ID": broker_prefix})
    assert r.status_code == 200, r.json
    assert r.json["name"] == "geocoder"
    assert r.json["breaker"] == {"state": "closed", "open_for_seconds": 0.0, "failures": 0, "opened_count": 1}
    assert geocoder_entry(client, READER)["breaker"]["state"] == "closed"
    assert breaker_for(cache, broker_prefix, geocoder()).allow().allowed
    [row] = audit_rows(engine, action="breaker_reset", request_id=broker_prefix)
    assert (row["key_id"], row["outcome"], row["target"]) == (key_id(OPERATOR), "ok", {"provider": "geocoder"})


def test_a_reader_may_not_reset_and_the_refusal_is_audited(app, cache, broker_prefix, engine):
    open_breaker(cache, broker_prefix)
    client = app.test_client()
    r = client.post("/api/v1/providers/geocoder/reset", headers=bearer(READER))
    assert r.status_code == 403 and r.json["error"] == "forbidden"
    assert geocoder_entry(client)["breaker"]["state"] == "open"
    refused = [
        row
        for row in audit_rows(engine, action="breaker_reset", key_id=key_id(READER))
        if row["target"].get("provider") == "geocoder"
    ]
    assert [row["outcome"] for row in refused] == ["refused"]
    assert refused[0]["target"]["path"] == "/api/v1/providers/geocoder/reset"


def test_an_unknown_provider_is_404_and_not_audited(app, engine):
    r = app.test_client().post("/api/v1/providers/nope/reset", headers=bearer(OPERATOR))
    assert r.status_code == 404 and r.json["error"] == "unknown_provider"
    assert "geocoder" in r.json["message"]
    assert [row for row in audit_rows(engine, action="breaker_reset") if row["target"].get("provider") == "nope"] == []


def test_without_redis_the_list_is_503_and_metrics_still_scrapes(make_app):
    app = make_app(redis_url="redis://127.0.0.1:1/0", broker_url="redis://127.0.0.1:1/0")
    client = app.test_client()
    r = client.get("/api/v1/providers", headers=bearer(API_KEY))
    assert r.status_code == 503 and r.json["error"] == "redis_unavailable"
    scrape = client.get("/metrics", headers=bearer(API_KEY))
    assert scrape.status_code == 200
    assert "etl_redis_up 0.0" in scrape.get_data(as_text=True)


def test_metrics_has_the_lookup_families(app, cache, broker_prefix):
    record(cache, broker_prefix, "geocoder", Counter({"calls:found": 3, "cache:hit": 7, "rate_limited": 2}))
    open_breaker(cache, broker_prefix)
    text = app.test_client().get("/metrics", headers=bearer(API_KEY)).get_data(as_text=True)
    assert 'etl_lookup_calls_total{outcome="found",provider="geocoder"} 3.0' in text
    assert 'etl_lookup_cache_total{provider="geocoder",result="hit"} 7.0' in text
    assert 'etl_lookup_rate_limited_total{provider="geocoder"} 2.0' in text
    assert 'etl_lookup_breaker_state{provider="geocoder",state="open"} 1.0' in text
    assert 'etl_lookup_breaker_state{provider="geocoder",state="closed"} 0.0' in text


def test_openapi_documents_the_providers(app):
    spec = app.test_client().get("/openapi.json", headers=bearer(API_KEY)).json
    reset = spec["paths"]["/api/v1/providers/{provider}/reset"]["post"]
    assert reset["parameters"][0]["schema"]["enum"] == ["geocoder"]
    assert {"200", "403", "404"} <= set(reset["responses"])
    schema = spec["components"]["schemas"]["Provider"]
    assert set(schema["required"]) == set(schema["properties"]) and schema["additionalProperties"] is False
    assert "get" in spec["paths"]["/api/v1/providers"]


def test_cli_lists_and_resets(make_cli, cache, broker_prefix, engine):
    cli = make_cli(ETL_GEOCODER_URL=GEOCODER_URL, ETL_GEOCODER_RATE="5/second")
    record(cache, broker_prefix, "geocoder", Counter({"calls:found": 3, "cache:hit": 1, "cache:miss": 3}))
    open_breaker(cache, broker_prefix)
    listed = cli("providers")
    assert listed.exit_code == 0, listed.output
    [line] = [line for line in listed.output.splitlines() if "geocoder" in line]
    for cell in ("geo.example:8080", "5/second", "1/3", "25.0%", "open (", "opened 1x"):
        assert cell in line, (cell, line)
    assert "s3cret" not in listed.output

    with engine.connect() as conn:
        last = conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM audit")).scalar()
    done = cli("providers", "reset", "geocoder")
    assert done.exit_code == 0, done.output
    assert breaker_for(cache, broker_prefix, geocoder()).state().state == "closed"
    assert "closed (" not in cli("providers").output and "closed, opened 1x" in cli("providers").output
    rows = [r for r in audit_rows(engine, action="breaker_reset", key_id="cli") if r["id"] > last]
    assert [(r["outcome"], r["target"]) for r in rows] == [("ok", {"provider": "geocoder"})]

    unknown = cli("providers", "reset", "nope")
    assert unknown.exit_code != 0 and "no provider 'nope'" in unknown.output


def test_the_database_takes_every_audit_action_the_models_list(engine):
    from etl_app.models import AUDIT_ACTIONS

    with engine.connect() as conn:
        check = conn.execute(
            sa.text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'ck_audit_action'")
        ).scalar_one()
    listed = sorted(part.split("'")[1] for part in check.split("ARRAY[")[1].split(",") if "'" in part)
    assert listed == sorted(AUDIT_ACTIONS)
