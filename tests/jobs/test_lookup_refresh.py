"""lookup-refresh: failed lookups are asked again once the provider's breaker is closed, never
while it is open; never-asked ones and lookups older than the TTL are refreshed; the cache and
the one-call-per-value rule hold. Real PostgreSQL (a database of its own, so no other test's
tutors are due), real Redis and a real HTTP geocoder."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from etl_app.db import make_engine
from etl_app.jobs.runner import run_job
from etl_app.lookups.metrics import breaker_for
from etl_app.pipeline import lookups as step

from tests.helpers.dead_letters import land
from tests.helpers.geocoder_server import FakeGeocoder, open_meteo
from tests.helpers.payloads import tutor
from tests.helpers.procs import wait_until
from tests.helpers.support import fresh_database


@pytest.fixture
def server() -> Iterator[FakeGeocoder]:
    fake = FakeGeocoder()
    yield fake
    fake.close()


@pytest.fixture
def own_database() -> Iterator[str]:
    with fresh_database(f"refresh_{uuid.uuid4().hex[:8]}") as url:
        yield url


def statuses(engine: sa.Engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT tutor_id, lookup_status, country_code, timezone FROM tutors"))
        return {r.tutor_id: (r.lookup_status, r.country_code, r.timezone) for r in rows}


def test_failed_lookups_wait_while_the_breaker_is_open_and_land_once_it_closes(make_app, own_database, server):
    app = make_app(database_url=own_database, geocoder_url=server.url, geocoder_rate="", job_batch_size=100)
    runtime = app.extensions["etl"]
    engine = make_engine(own_database, pool_size=1)
    places = {"T1": "Berlin", "T2": "Lima", "T3": " berlin ", "T4": "Atlantis", "T5": "Lima"}
    land(engine, "tutors", [tutor(key, location=place) for key, place in places.items()])
    with engine.begin() as conn:  # T1..T3 failed while the geocoder was down; T5 found an hour ago; T4 never asked
        conn.execute(sa.text("UPDATE tutors SET lookup_status = 'failed', looked_up_at = now() WHERE tutor_id < 'T4'"))
        conn.execute(
            sa.text(
                "UPDATE tutors SET lookup_status = 'found', country_code = 'PE', "
                "looked_up_at = now() - interval '1 hour' WHERE tutor_id = 'T5'"
            )
        )
    (provider,) = step.providers_for(runtime.registry["tutors"], runtime.settings)
    breaker = breaker_for(runtime.cache, runtime.settings.broker_key_prefix, provider)
    for _ in range(provider.breaker_failures):
        breaker.failure()
    assert breaker.state().state == "open"

    first = run_job(runtime.engine, "lookup-refresh", trigger="cli", settings=runtime.settings, tools=runtime.job_tools)
    assert (first.status, first.rows) == ("succeeded", 0)
    assert server.total == 0, "an open breaker is not called, not even for a record never asked"
    assert statuses(engine)["T1"] == ("failed", None, None)

    breaker.reset()
    second = run_job(
        runtime.engine, "lookup-refresh", trigger="cli", settings=runtime.settings, tools=runtime.job_tools
    )
    assert (second.status, second.rows) == ("succeeded", 4)
    assert dict(server.requests) == {"berlin": 1, "lima": 1, "atlantis": 1}  # one call per distinct value
    assert statuses(engine) == {
        "T1": ("found", "DE", "Europe/Berlin"),
        "T2": ("found", "PE", "America/Lima"),
        "T3": ("found", "DE", "Europe/Berlin"),
        "T4": ("not_found", None, None),
        "T5": ("found", "PE", None),  # fresh: not asked again
    }
    assert (
        run_job(
            runtime.engine, "lookup-refresh", trigger="cli", settings=runtime.settings, tools=runtime.job_tools
        ).rows
        == 0
    )

    with engine.begin() as conn:  # T5's lookup outlived the provider's TTL
        conn.execute(
            sa.text("UPDATE tutors SET looked_up_at = now() - make_interval(secs => :ttl + 60) WHERE tutor_id = 'T5'"),
            {"ttl": provider.ttl_seconds},
        )
    assert (
        run_job(
            runtime.engine, "lookup-refresh", trigger="cli", settings=runtime.settings, tools=runtime.job_tools
        ).rows
        == 1
    )
    assert statuses(engine)["T5"] == ("found", "PE", "America/Lima")
    assert server.total == 3, "Lima came from the cache"
    engine.dispose()


def test_after_the_cool_down_the_refresh_probes_the_provider_itself_and_lands_the_failed(
    make_app, own_database, server
):
    """No new tutor comes after the outage, and nobody resets the breaker: once the cool-down is
    over, the refresh's first call is the probe. While the provider still fails, that one call is
    all (nothing written, the breaker open again); once it answers, the breaker closes and every
    failed tutor is written."""
    app = make_app(
        database_url=own_database,
        geocoder_url=server.url,
        geocoder_rate="",
        geocoder_breaker_cooldown_seconds=1,
        job_batch_size=100,
    )
    runtime = app.extensions["etl"]
    engine = make_engine(own_database, pool_size=1)
    places = {"T1": "Berlin", "T2": "Lima", "T3": "Berlin"}
    land(engine, "tutors", [tutor(key, location=place) for key, place in places.items()])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tutors SET lookup_status = 'failed', looked_up_at = now()"))
    (provider,) = step.providers_for(runtime.registry["tutors"], runtime.settings)
    breaker = breaker_for(runtime.cache, runtime.settings.broker_key_prefix, provider)
    for _ in range(provider.breaker_failures):
        breaker.failure()
    assert breaker.state().state == "open"

    assert (
        run_job(
            runtime.engine, "lookup-refresh", trigger="cli", settings=runtime.settings, tools=runtime.job_tools
        ).rows
        == 0
    )
    assert server.total == 0, "not during the cool-down"

    server.reply = lambda name: ("json", (500, {"error": "still down"}, {}))
    wait_until(lambda: breaker.state().state == "half_open", 5, 0.1, what="the cool-down to end")
    assert (
        run_job(
            runtime.engine, "lookup-refresh", trigger="cli", settings=runtime.settings, tools=runtime.job_tools
        ).rows
        == 0
    )
    assert server.total == 1, "one probe, the rest deferred"
    assert breaker.state().state == "open"
    assert {s for s, _, _ in statuses(engine).values()} == {"failed"}

    server.reply = open_meteo
    wait_until(lambda: breaker.state().state == "half_open", 5, 0.1, what="the next cool-down to end")
    assert (
        run_job(
            runtime.engine, "lookup-refresh", trigger="cli", settings=runtime.settings, tools=runtime.job_tools
        ).rows
        == 3
    )
    assert breaker.state().state == "closed"
    assert statuses(engine) == {
        "T1": ("found", "DE", "Europe/Berlin"),
        "T2": ("found", "PE", "America/Lima"),
        "T3": ("found", "DE", "Europe/Berlin"),
    }
    assert server.total == 3  # the failed probe, then Berlin and Lima once each
    engine.dispose()
