"""A web process killed after a submit committed and before it answered: the client's retry with
the same Idempotency-Key gets the first answer, and nothing is stored, persisted or counted twice.

The web runs ``tests.helpers.kill_web_app:app``, which SIGKILLs its process once, right after the
first submit's commit (the ingestion, its outbox rows and the key's answer, in one transaction).
The records were committed with no one left to send them (that process's relay died with it): the
outbox sweeper of beat sends them after the lease, and gunicorn starts a new web process."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.helpers.faultlib import Clock, assert_exactly_once, report, wait_settled
from tests.helpers.payloads import student
from tests.helpers.procs import ROOT, wait_until

pytestmark = pytest.mark.slow

RECORDS = 50


def test_a_web_process_killed_between_its_commit_and_its_answer_answers_the_retry_once(
    make_stack, fault_engine, registry, unique, tmp_path
):
    kills = tmp_path / "kills"
    kills.mkdir()
    stack = make_stack(PYTHONPATH=str(ROOT), ETL_TEST_KILL_WEB="after_commit", ETL_TEST_KILL_DIR=str(kills))
    stack.worker()
    stack.beat()
    web = stack.web(app="tests.helpers.kill_web_app:app")
    api = stack.api()
    records = [student(f"{unique}-{i:03d}", name=f"Student {i}") for i in range(RECORDS)]
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    url = f"{stack.web_url}/api/v1/students/batch"
    clock = Clock()

    with pytest.raises(requests.ConnectionError):
        api.http.post(url, json=records, headers=headers, timeout=30)
    committed_id, killed_pid = (kills / "after_commit").read_text().split()
    assert f"kill_web_app: ingestion {committed_id} committed; SIGKILLs web pid:{killed_pid}" in web.log()

    def retried() -> requests.Response | None:
        try:
            return api.http.post(url, json=records, headers=headers, timeout=30)
        except requests.ConnectionError:
            return None  # gunicorn is starting the killed process again

    retry = wait_until(retried, 60, what="an answer to the retry")
    api.answers.record(retry)
    assert retry.status_code == 202, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == {"ingestion_id": committed_id, "accepted": RECORDS, "rejected": 0, "errors": []}

    wait_settled(fault_engine, [committed_id], 120, "sent by the sweeper")
    settle = clock()
    o = assert_exactly_once(fault_engine, registry, answers=stack.answers, compare=("name",))
    assert (o.accepted, o.persisted, o.dead) == (RECORDS, RECORDS, 0)
    body = api.get(f"ingestions/{committed_id}").json()
    assert body["counts"]["persisted"] == RECORDS and body["quality"]["received"] == RECORDS
    report("web SIGKILL after commit, retried with its Idempotency-Key", o, settle, ingestions=1)
