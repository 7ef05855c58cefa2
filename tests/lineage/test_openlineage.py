"""OpenLineage run events per ingestion, received by a lineage server of the test's own."""

from __future__ import annotations

import json
import logging
import queue
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from etl_app.config import Settings
from etl_app.lineage import openlineage as ol

from tests.helpers.lineage_server import LineageServer
from tests.helpers.payloads import student

DATABASE_URL = "postgresql+psycopg://etl:s3cret@db.example.internal:5433/etl"


@pytest.fixture
def server() -> Iterator[LineageServer]:
    srv = LineageServer()
    yield srv
    srv.close()


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A server that accepts connections (the kernel completes them) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # what is still pending is reset: the sender moves on


@pytest.fixture
def closed_url() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more: connections are refused
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def every_warning(monkeypatch):
    """Warnings are not held back by the once-a-minute throttle during these tests."""
    monkeypatch.setattr(ol, "WARN_EVERY_SECONDS", 0.0)


def settings(url: str | None, **over) -> Settings:
    return Settings(database_url=DATABASE_URL, openlineage_url=url, **over)


def ingestion(**over) -> dict:
    return {
        "id": uuid.uuid4(),
        "record_type": "sessions",
        "source": "batch",
        "created_at": "2026-11-30T15:00:00.125000+00:00",
        "filename": None,
        **over,
    }


def report(ident, status: str = "finished") -> dict:
    return {
        "id": str(ident),
        "record_type": "sessions",
        "source": "batch",
        "status": status,
        "counts": {"received": 200, "persisted": 196, "dead": 4, "rejected": 5, "in_flight": 0},
        "quality": {
            "received": 205,
            "validity": 0.9756,
            "completeness": {"tutor_id": 1.0, "actual_start": 0.85, "session_type": 0.5, "overall": 0.675},
            "uniqueness": 0.995,
            "integrity": 0.98,
            "timeliness": {"p50": 12.5, "p95": 340.0, "max": 900.0},
            "score": 0.9069,
            "level": "good",
            "top_errors": [{"field": "subject", "message": "Missing data for required field.", "count": 5}],
        },
        "created_at": "2026-11-30T15:00:00.125000+00:00",
        "finished_at": "2026-11-30T15:00:07.250000+00:00",
        "upload": None,
    }


def test_an_ingestion_is_one_run_from_start_to_complete_with_its_quality(server):
    conf = settings(server.url)
    ing = ingestion()
    ol.started(conf, ing)
    ol.settled(conf, report(ing["id"]))
    start, complete = server.wait_for(2)
    run_id = str(ing["id"])

    assert [path for path, _ in server.requests] == ["/api/v1/lineage", "/api/v1/lineage"]
    assert server.requests[0][1]["Content-Type"] == "application/json"
    assert "Authorization" not in server.requests[0][1]

    assert start["eventType"] == "START"
    assert start["eventTime"] == "2026-11-30T15:00:00.125000+00:00"
    assert start["run"]["runId"] == run_id
    assert start["job"]["namespace"] == "etl_app"
    assert start["job"]["name"] == "ingest.sessions"
    assert start["producer"] == ol.PRODUCER
    assert start["inputs"] == []
    assert [(o["namespace"], o["name"]) for o in start["outputs"]] == [
        ("postgres://db.example.internal:5433", "etl.public.sessions")
    ]
    assert "s3cret" not in json.dumps(start)
    assert start["run"]["facets"]["etl_app_ingestion"]["source"] == "batch"

    assert complete["eventType"] == "COMPLETE"
    assert complete["eventTime"] == "2026-11-30T15:00:07.250000+00:00"
    assert complete["run"]["runId"] == run_id
    assert (complete["job"]["namespace"], complete["job"]["name"]) == ("etl_app", "ingest.sessions")
    assert complete["producer"] == ol.PRODUCER
    (output,) = complete["outputs"]
    assert (output["namespace"], output["name"]) == ("postgres://db.example.internal:5433", "etl.public.sessions")
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 196
    dq = output["facets"]["dataQualityMetrics"]
    assert dq["_schemaURL"].endswith("/DataQualityMetricsDatasetFacet.json#/$defs/DataQualityMetricsDatasetFacet")
    assert dq["_producer"] == ol.PRODUCER
    assert dq["rowCount"] == 200
    assert dq["captureDate"] == "2026-11-30T15:00:07.250000+00:00"
    assert dq["columnMetrics"] == {
        "tutor_id": {"nullCount": 0},
        "actual_start": {"nullCount": 30},
        "session_type": {"nullCount": 100},
    }
    quality = output["facets"]["etl_app_quality"]
    assert quality["_producer"] == ol.PRODUCER and quality["_schemaURL"]
    assert (quality["score"], quality["level"]) == (0.9069, "good")
    assert (quality["validity"], quality["uniqueness"], quality["integrity"]) == (0.9756, 0.995, 0.98)
    assert quality["completeness"]["overall"] == 0.675
    assert quality["counts"]["dead"] == 4
    assert quality["topErrors"][0]["count"] == 5


def test_a_failed_ingestion_ends_its_run_with_fail(server):
    conf = settings(server.url)
    ing = ingestion()
    ol.started(conf, ing)
    failed = report(ing["id"], status="failed")
    # as ingestion_status returns it in a worker: a UUID and datetimes, not JSON text
    failed.update(id=ing["id"], finished_at=datetime(2026, 11, 30, 15, 0, 9, tzinfo=UTC), upload={"filename": "s.csv"})
    ol.settled(conf, failed)
    events = server.wait_for(2)
    assert [(e["eventType"], e["run"]["runId"]) for e in events] == [
        ("START", str(ing["id"])),
        ("FAIL", str(ing["id"])),
    ]
    assert events[1]["eventTime"] == "2026-11-30T15:00:09+00:00"
    assert [(i["namespace"], i["name"]) for i in events[1]["inputs"]] == [("upload", "s.csv")]
    assert events[1]["outputs"][0]["facets"]["dataQualityMetrics"]["rowCount"] == 200


def test_an_upload_is_the_input_dataset_and_the_namespace_and_api_key_are_the_configured_ones(server):
    conf = settings(server.url, openlineage_namespace="tutoring", openlineage_api_key="lineage-key-1")
    ing = ingestion(source="upload", filename="sessions-2026-11.csv")
    ol.started(conf, ing)
    (event,) = server.wait_for(1)
    assert [(i["namespace"], i["name"]) for i in event["inputs"]] == [("upload", "sessions-2026-11.csv")]
    assert event["job"]["namespace"] == "tutoring"
    assert server.requests[0][1]["Authorization"] == "Bearer lineage-key-1"


def test_without_a_url_nothing_is_sent_and_nothing_logged(server, caplog):
    ing = ingestion()
    off = settings(None)
    with caplog.at_level(logging.DEBUG, logger="etl_app.lineage.openlineage"):
        ol.started(off, ing)
        ol.settled(off, report(ing["id"]))
        marker = ingestion()
        ol.started(settings(server.url), marker)  # queued after anything the calls above might have queued
        server.wait_for(1)
        time.sleep(0.2)
    assert [e["run"]["runId"] for e in server.events] == [str(marker["id"])]
    assert not [r for r in caplog.records if str(ing["id"]) in r.getMessage()]


def test_unset_url_setting_reads_as_off_and_the_client_conventions_as_on():
    assert Settings.from_env({}).openlineage_url is None
    on = Settings.from_env(
        {
            "OPENLINEAGE_URL": "http://marquez:5000",
            "OPENLINEAGE_ENDPOINT": "api/v1/lineage",
            "OPENLINEAGE_API_KEY": "k",
            "OPENLINEAGE_NAMESPACE": "tutoring",
        }
    )
    assert (on.openlineage_url, on.openlineage_api_key, on.openlineage_namespace) == (
        "http://marquez:5000",
        "k",
        "tutoring",
    )


@pytest.mark.parametrize("endpoint", ["closed_url", "hanging_url"])
def test_an_endpoint_down_or_hanging_neither_blocks_nor_fails_the_caller(
    endpoint, request, server, caplog, monkeypatch
):
    # Read when the sender builds this URL's transport: long enough that a call which waited for the
    # hanging endpoint would return only after its failure was logged.
    monkeypatch.setattr(ol, "READ_TIMEOUT_SECONDS", 3.0)
    url = request.getfixturevalue(endpoint)
    conf = settings(url)
    ing = ingestion()
    with caplog.at_level(logging.WARNING, logger="etl_app.lineage.openlineage"):
        ol.started(conf, ing)
        ol.settled(conf, report(ing["id"]))
        if endpoint == "hanging_url":  # both calls returned while the first send still waits for an answer
            assert not [r for r in caplog.records if "not sent" in r.getMessage()]
        after = ingestion()
        ol.started(settings(server.url), after)  # the sender is not stuck behind the dead endpoint
        assert server.wait_for(1)[0]["run"]["runId"] == str(after["id"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"START event for ingestion {ing['id']} not sent" in m for m in warnings), warnings
    assert any(f"COMPLETE event for ingestion {ing['id']} not sent" in m for m in warnings), warnings


def test_an_ingestion_through_the_api_sends_its_start(make_app, auth, server, unique):
    client = make_app(openlineage_url=server.url).test_client()
    r = client.post("/api/v1/students/batch", json=[student(f"{unique}-0"), student(f"{unique}-1")], headers=auth)
    assert r.status_code == 202
    ingestion_id = r.get_json()["ingestion_id"]
    events = server.wait_for(1)
    assert [(e["eventType"], e["run"]["runId"]) for e in events] == [("START", ingestion_id)]
    assert events[0]["job"]["name"] == "ingest.students"
    assert events[0]["outputs"][0]["name"].endswith(".public.students")
    assert events[0]["run"]["facets"]["etl_app_ingestion"]["source"] == "batch"


def test_a_full_queue_drops_the_event_with_a_warning_and_the_caller_goes_on(hanging_url, caplog, monkeypatch):
    monkeypatch.setattr(ol, "QUEUE_SIZE", 2)
    emitter = ol._Emitter()  # a sender of its own, stuck on the hanging endpoint's first event
    conf = (hanging_url, "api/v1/lineage", "", "etl_app", DATABASE_URL)
    ids = [uuid.uuid4() for _ in range(5)]
    try:
        with caplog.at_level(logging.WARNING, logger="etl_app.lineage.openlineage"):
            for ident in ids:  # a put that waited for room would never return: the sender is stuck
                emitter.put((conf, "START", ingestion(id=ident)))
    finally:
        # The two queued events go nowhere: once the hanging endpoint is closed, its port may be a
        # later test's lineage server, which would receive them.
        while True:
            try:
                emitter.queue.get_nowait()
            except queue.Empty:
                break
            emitter.queue.task_done()
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped and all("2 events queued" in m for m in dropped)
    assert str(ids[-1]) in dropped[-1]


CHILD = """
import sys, time
from etl_app.lineage import openlineage as ol
from etl_app.config import Settings
conf = Settings(database_url={db!r}, openlineage_url=sys.argv[1])
ol.READ_TIMEOUT_SECONDS = 120.0  # a hanging endpoint would hold an exit that waited for the send
ol.preload(conf)  # the client's imports: a process that has run a while has them
ol.started(conf, {{
    "id": sys.argv[2], "record_type": "tutors", "source": "api",
    "created_at": "2026-11-30T15:00:00+00:00", "filename": None}})
print(time.monotonic(), flush=True)
"""


def run_child(url: str, ident: str) -> float:
    """A process that queues one START and exits at once; the seconds from its call to its exit."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(db=DATABASE_URL), url, ident],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return time.monotonic() - float(proc.stdout.split()[0])


def test_what_is_queued_at_exit_is_sent(server):
    ident = str(uuid.uuid4())
    run_child(server.url, ident)
    assert [(e["eventType"], e["run"]["runId"]) for e in server.wait_for(1)] == [("START", ident)]


def test_exit_waits_for_a_hanging_endpoint_at_most_two_seconds(hanging_url):
    took = run_child(hanging_url, str(uuid.uuid4()))
    assert 0 < took < 60  # bounded by the exit flush, not by the 120 s read timeout


def test_a_forked_child_sends_with_a_sender_of_its_own(server):
    import os

    parent = ingestion()
    ol.started(settings(server.url), parent)  # the parent's sender thread runs when the child is forked
    server.wait_for(1)
    child = ingestion()
    pid = os.fork()
    if pid == 0:  # the child: a Celery pool process, as it were
        try:
            ol.started(settings(server.url), child)
            os._exit(0 if ol.flush(10) else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    events = server.wait_for(2)
    assert [e["run"]["runId"] for e in events] == [str(parent["id"]), str(child["id"])]
