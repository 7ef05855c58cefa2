"""Backpressure end to end: gunicorn with a small bound on the records waiting to settle and no
worker yet, so the backlog fills; submits, uploads and `etl-app submit` are told 429 with
Retry-After; once a real `celery worker` drains it they are taken again, and every record the
service accepted is persisted exactly once. A database of this module's own: its counts are
exact."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from etl_app.db import make_engine

from tests.helpers.payloads import student
from tests.helpers.procs import BIN, Stack, running_stack, wait_until
from tests.helpers.support import API_KEY, RUN_ID, Api, fresh_database, redis_db

pytestmark = pytest.mark.slow

BOUND = 60  # ETL_BACKLOG_MAX_RECORDS of this module's web processes
BATCH = 20


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    with fresh_database(f"{RUN_ID}_backpressure") as url:
        eng = make_engine(url, pool_size=2, application_name="etl_app-backpressure-tests")
        eng.etl_url = url  # type: ignore[attr-defined]
        yield eng
        eng.dispose()


@pytest.fixture(scope="module")
def stack(engine, tmp_path_factory) -> Iterator[Stack]:
    env = {"ETL_BACKLOG_MAX_RECORDS": str(BOUND), "ETL_BACKLOG_MAX_AGE_SECONDS": "0"}
    with running_stack(engine.etl_url, redis_db(15), tmp_path_factory.mktemp("logs"), **env) as s:
        s.web()  # no worker yet: nothing settles
        yield s


def students(tag: str, n: int) -> list[dict]:
    return [student(f"{tag}-{i}") for i in range(n)]


def test_a_full_backlog_is_429_with_retry_after_until_the_workers_drain_it(stack, engine, tmp_path):
    api = Api(stack.web_url)
    tag = "bp" + uuid.uuid4().hex[:8]
    accepted: set[str] = set()
    refused: set[str] = set()

    def submit(kind: str) -> bool:
        """One submit of ``kind``; True when it was refused 429 backlog_full (with Retry-After 30:
        nothing has settled in the last minute)."""
        n = len(accepted) + len(refused)
        if kind == "batch":
            payloads = students(f"{tag}-{n}", BATCH)
            answer = api.post("students/batch", payloads)
        else:
            payloads = [student(f"{tag}-{n}-one")]
            answer = api.post("students", payloads[0])
        keys = {p["student_id"] for p in payloads}
        if answer.status_code == 202:
            accepted.update(keys)
            return False
        assert answer.status_code == 429, answer.text
        body = answer.json()
        assert body["error"] == "backlog_full" and body["bound"]["records"] == BOUND
        assert body["backlog"]["records"] > BOUND and body["retry_after"] == 30
        assert answer.headers["Retry-After"] == "30"
        refused.update(keys)
        return True

    # Fill it: each web process sees the backlog full within a second of its passing the bound.
    for kind in ("batch", "single"):
        wait_until(lambda kind=kind: submit(kind), 60, interval=0.05, what=f"a {kind} submit refused 429")
    assert len(accepted) > BOUND

    def upload_refused():
        answer = api.upload("students", "s.csv", b"student_id,name\nup-1,Ann\n", "text/csv")
        return [answer] if answer.status_code == 429 else None  # a Response of a 4xx is falsy

    (upload,) = wait_until(upload_refused, 60, what="an upload refused 429")
    assert upload.json()["error"] == "backlog_full" and upload.headers["Retry-After"] == "30"
    ready = api.http.get(f"{stack.web_url}/ready", timeout=30)
    assert ready.status_code == 200 and ready.json()["backlog"]["full"] is True

    # `etl-app submit` is told to wait, and says so.
    csv_file = tmp_path / "students.csv"
    rows = "".join(f"{tag}-cli-{i},Name {i}\n" for i in range(5))
    csv_file.write_text(f"student_id,name\n{rows}")
    err_path = tmp_path / "submit.err"
    with open(tmp_path / "submit.out", "wb") as out, open(err_path, "wb") as err:
        cli = subprocess.Popen(
            [str(BIN / "etl-app"), "submit", str(csv_file), "--type", "students", "--max-wait", "300"],
            env={"PATH": str(BIN), "ETL_API_URL": stack.web_url, "ETL_API_KEY": API_KEY, "ETL_VAR_DIR": str(tmp_path)},
            stdout=out,
            stderr=err,
        )
    try:
        wait_until(lambda: "HTTP 429 (backlog_full)" in err_path.read_text(), 60, what="etl-app submit to wait")
        assert "the service is busy" in err_path.read_text()
        assert "waiting 30 s before sending the file again" in err_path.read_text()

        stack.worker()  # the workers drain the backlog
        assert cli.wait(timeout=240) == 0, err_path.read_text()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    cli_ingestion = (tmp_path / "submit.out").read_text().strip()
    assert api.wait_settled(cli_ingestion, timeout=120)["counts"]["persisted"] == 5

    # Taken again; nothing lost, nothing twice, nothing of the refused stored.
    wait_until(lambda: not submit("batch"), 120, interval=1, what="a batch taken again")
    accepted_keys = sorted(accepted)
    with engine.connect() as conn:

        def persisted() -> bool:
            return conn.scalar(
                sa.text("SELECT count(*) FROM students WHERE student_id = ANY(:k)"), {"k": accepted_keys}
            ) == len(accepted_keys)

        wait_until(persisted, 180, interval=0.5, what="every accepted record persisted")
        per_key = dict(
            conn.execute(
                sa.text(
                    "SELECT natural_key, count(*) FROM raw_records WHERE natural_key LIKE :t AND status = 'persisted' "
                    "GROUP BY 1"
                ),
                {"t": f"{tag}-%"},
            ).all()
        )
        assert {k: n for k, n in per_key.items() if n != 1} == {}
        assert set(per_key) == accepted | {f"{tag}-cli-{i}" for i in range(5)}
        assert not (set(per_key) & refused)
        assert conn.scalar(sa.text("SELECT count(*) FROM raw_records WHERE status <> 'persisted'")) == 0
        assert conn.scalar(sa.text("SELECT count(*) FROM students WHERE student_id = 'up-1'")) == 0


def test_the_drain_rate_is_counted_once_the_workers_settle(stack):
    """After the first test the workers have settled records: /ready's drain rate says so."""
    body = Api(stack.web_url).http.get(f"{stack.web_url}/ready", timeout=30).json()
    assert body["backlog"]["full"] is False
    assert body["backlog"]["settled_per_second"] > 0
