"""`etl-app run` restarts a crashed process instead of stopping the service: its worker killed
with SIGKILL (as the OOM killer would) is started again while web keeps answering, records still
land, ``/metrics`` counts the restart, and Ctrl-C still stops every process."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import E2E_REDIS
from tests.helpers.payloads import student
from tests.helpers.procs import Proc, Stack, assert_a_quiet_start, running_stack, wait_answering, wait_until
from tests.helpers.support import Api

pytestmark = pytest.mark.slow

# Ready lines of the pipeline's worker (hostname etl@…), as celery logs them through the supervisor.
WORKER_READY = re.compile(r"^\S+ worker\s*\| .*etl@\S+ ready\.", re.MULTILINE)


@pytest.fixture
def stack(database_url, tmp_path) -> Iterator[Stack]:
    with running_stack(database_url, E2E_REDIS, tmp_path) as s:
        yield s


class HealthWatch(threading.Thread):
    """GET /health every 0.2 s until stopped, keeping what each one answered."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[int | str] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                self.answers.append(requests.get(f"{self.url}/health", timeout=5).status_code)
            except requests.RequestException as exc:
                self.answers.append(type(exc).__name__)
            self._done.wait(0.2)

    def stop(self) -> list[int | str]:
        self._done.set()
        self.join(10)
        return self.answers


def restarts(url: str) -> dict[str, float]:
    r = requests.get(f"{url}/metrics", headers=Api(url).http.headers, timeout=30)
    assert r.status_code == 200, r.text[:2000]
    return {
        s.labels["process"]: s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
        if s.name == "etl_process_restarts_total"
    }


def started_pid(run: Proc, process: str) -> int:
    """The pid `etl-app run` printed for ``process`` (the ``/bin/sh -c`` of its Procfile line)."""
    found = re.search(rf"system\s*\| {process} started \(pid (\d+)\)", run.log())
    assert found, run.log()
    return int(found.group(1))


@pytest.mark.timeout(300)
def test_a_killed_worker_is_started_again_while_web_keeps_answering(stack, tmp_path):
    run = stack.etl_app_run(tmp_path / "var")
    wait_answering(run, f"{stack.web_url}/health", timeout=90)
    wait_until(lambda: WORKER_READY.search(run.log()), 90, what=f"the worker to be ready:\n{run.log()}")
    api = Api(stack.web_url)
    assert restarts(stack.web_url) == dict.fromkeys(("web", "worker", "lookups", "dead_letter", "beat", "flower"), 0)
    [worker] = psutil.Process(started_pid(run, "worker")).children()  # celery's main process, under its shell
    every_process = [p.pid for p in psutil.Process(run.pid).children(recursive=True)]

    watch = HealthWatch(stack.web_url)
    watch.start()
    time.sleep(1)
    killed_at = time.monotonic()
    worker.send_signal(signal.SIGKILL)
    wait_until(lambda: len(WORKER_READY.findall(run.log())) == 2, 120, what=f"a new worker:\n{run.log()}")
    back_after = time.monotonic() - killed_at
    sid = f"S-{uuid.uuid4().hex[:8]}"
    api.submit("students", student(sid))
    wait_until(lambda: api.get(f"records/students/{sid}").status_code == 200, 60, what=f"student {sid} stored")
    answers = watch.stop()

    assert answers and set(answers) == {200}, answers  # web answered throughout
    log = run.log()
    assert re.search(r"worker exited unexpectedly \(pid \d+, .*killed by SIGKILL\); .*restarting in 1 s", log), log
    assert re.search(r"worker restarted \(pid \d+, restart 1\)", log), log
    assert not re.search(r"(web|lookups|dead_letter|beat|flower) (exited|restarted)", log), log
    counts = restarts(stack.web_url)
    assert counts["worker"] == 1 and counts["web"] == 0, counts
    print(f"the killed worker was ready again {back_after:.1f} s later")

    every_process += [p.pid for p in psutil.Process(run.pid).children(recursive=True)]  # the new worker's
    os.killpg(run.pid, signal.SIGINT)  # Ctrl-C in its terminal
    run.popen.wait(timeout=60)
    wait_until(
        lambda: all(_gone(pid) for pid in every_process), 30, what=f"every process of etl-app run to exit:\n{run.log()}"
    )
    assert "every process has stopped" in run.log()
    assert not (tmp_path / "var" / "process_restarts.json").exists()
    assert_a_quiet_start(run.log())


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
