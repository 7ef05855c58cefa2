"""Structured logs of a real stack (web under gunicorn as in the Procfile, worker, beat) with
ETL_LOG_FORMAT=json and passwords in DATABASE_URL and REDIS_URL: every line of every process is
one JSON object (beat's start banner aside, printed before logging is set up), the ingestion id
and the task ids are on the lines about them, and no secret is written anywhere.

PostgreSQL here trusts local connections and Redis's default user has no password, so URLs with
a dummy password still connect (``redis://default:<password>@`` authenticates as that user)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
import requests

from etl_app.local.processes import free_port

from tests.helpers.payloads import session, tutor
from tests.helpers.procs import running_stack, wait_answering, wait_until
from tests.helpers.support import API_KEY, Api, redis_db

pytestmark = pytest.mark.slow

PASSWORD = "pw-never-logged-7f3a"
METRICS_KEY = "metrics-key-never-logged-91c2"
FLOWER_AUTH = "flower:flower-pass-never-logged-5d1e"
BEAT_BANNER = re.compile(r"^(celery beat v.* is starting\.|__ .* _|LocalTime -> |Configuration ->|\s+\. |$)")


def with_password(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}:{PASSWORD}@{host}", parts.path, parts.query, ""))


@pytest.fixture(scope="module")
def json_stack(database_url, tmp_path_factory):
    database = with_password(database_url, urlsplit(database_url).username or "postgres")
    redis_url = with_password(redis_db(15), "default")
    log_dir = tmp_path_factory.mktemp("json-logs")
    env = {
        "ETL_LOG_FORMAT": "json",
        "ETL_METRICS_KEY": METRICS_KEY,
        "FLOWER_BASIC_AUTH": FLOWER_AUTH,
        "ETL_SWEEP_INTERVAL_SECONDS": "2",
        "ETL_PARENT_WAIT_SECONDS": "3",
        "ETL_RETRY_BACKOFF_SECONDS": "1",
        "ETL_RETRY_BACKOFF_MAX_SECONDS": "1",
    }
    with running_stack(database, redis_url, log_dir, **env) as stack:
        stack.worker()
        stack.beat()
        port = free_port()
        web = stack.procfile("web", WEB_PORT=str(port), WEB_CONCURRENCY="2")
        stack.web_url = f"http://127.0.0.1:{port}"
        wait_answering(web, f"{stack.web_url}/health")
        yield stack, database, redis_url


def test_every_line_is_json_with_context_and_no_secret(json_stack, unique):
    stack, database, redis_url = json_stack
    api = Api(stack.web_url)
    ok = api.submit("tutors", tutor(f"{unique}-T"))
    api.wait_finished(ok["ingestion_id"])
    batch = api.submit("tutors/batch", [tutor(f"{unique}-T2"), {"tutor_id": f"{unique}-bad"}])
    orphan = api.submit("sessions", session(f"{unique}-S", f"{unique}-missing", f"{unique}-missing"))
    wrong_key = requests.get(f"{stack.web_url}/api/v1/record-types", headers={"Authorization": "Bearer nope-nope"})
    assert wrong_key.status_code == 401
    assert api.post("tutors", {"tutor_id": 1}).status_code == 422
    bad_body = api.http.post(f"{api.base}/api/v1/tutors", data=b"{no", headers={"Content-Type": "application/json"})
    assert bad_body.status_code == 400
    metrics = requests.get(f"{stack.web_url}/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"})
    assert metrics.status_code == 200
    # the orphan session waits for its parents, then is dead-lettered (a worker line about it)
    wait_until(lambda: api.get(f"ingestions/{orphan['ingestion_id']}").json()["counts"]["dead"] == 1, 60)

    def lines() -> dict[str, str]:
        return {path.name: path.read_text() for path in sorted(Path(stack.log_dir).glob("*.log"))}

    def beat_sent() -> bool:
        return any(name.startswith("beat") and "etl.beat." in text for name, text in lines().items())

    wait_until(beat_sent, 30, what="beat to send the sweeper")
    parsed: list[dict] = []
    for name, text in lines().items():
        for number, line in enumerate(text.splitlines()):
            if name.startswith("beat") and BEAT_BANNER.match(line):
                continue  # printed by `celery beat` before logging is set up (docs/operations.md, Logs)
            try:
                parsed.append({**orjson.loads(line), "_file": name})
            except orjson.JSONDecodeError:
                pytest.fail(f"{name}:{number + 1} is not JSON: {line!r}")
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in parsed)
    assert {entry["_file"].split("-")[0] for entry in parsed} == {"web", "worker", "beat"}

    # web: the ingestion's lines carry its id, record type and request id; gunicorn's too are JSON
    stored = [e for e in parsed if e.get("ingestion_id") == ok["ingestion_id"]]
    assert stored and all(e["record_type"] == "tutors" and e.get("request_id") for e in stored)
    assert any(e.get("ingestion_id") == batch["ingestion_id"] and "1 rejected" in e["message"] for e in parsed)
    access = [e for e in parsed if e["logger"] == "gunicorn.access"]
    assert {"202", "401", "400", "422"} <= {e["http"]["status"] for e in access}
    # worker: a task's lines carry its id and name
    traced = [e for e in parsed if e["logger"] == "celery.app.trace"]
    assert traced and all(f"{e['task_name']}[{e['task_id']}]" in e["message"] for e in traced)
    assert any(e.get("task_name") == "etl.beat.outbox-sweeper" and e["logger"] == "etl_app.jobs.runner" for e in parsed)
    # the broker URL is written masked; no key, password or URL with a password anywhere
    assert any("redis://default:***@" in e["message"] for e in parsed)
    everything = "\n".join(lines().values())
    for secret in (API_KEY, PASSWORD, METRICS_KEY, FLOWER_AUTH, FLOWER_AUTH.partition(":")[2], database, redis_url):
        assert secret not in everything, secret
