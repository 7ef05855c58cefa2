"""Flower as the Procfile runs it: behind basic auth taken from the environment (never from its
command line), bound to 127.0.0.1, seeing the pipeline's worker and tasks on the deployment's
own broker keys (ETL_BROKER_KEY_PREFIX)."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from etl_app import names

from tests.helpers.payloads import student, tutor
from tests.helpers.procs import Proc, free_port, procfile_command, wait_answering, wait_until

USER, PASSWORD = "ops", "flower-" + uuid.uuid4().hex
PIPELINE = {names.VALIDATE, names.ENRICH, names.PERSIST}


@pytest.mark.parametrize("credentials", [None, ""], ids=["unset", "empty"])
def test_the_procfile_line_refuses_to_start_flower_without_credentials(credentials):
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    env["FLOWER_PORT"] = str(free_port())
    if credentials is not None:
        env["FLOWER_BASIC_AUTH"] = credentials
    # were Flower to start (open) instead, it would still be running at the timeout
    done = subprocess.run(["sh", "-c", procfile_command("flower")], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "FLOWER_BASIC_AUTH: must be user:password" in done.stderr


@dataclass
class Flower:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def flower(stack) -> Flower:
    """The Procfile's flower line on the stack's broker keys, with credentials in its environment."""
    port = free_port()
    proc = stack.procfile("flower", FLOWER_PORT=str(port), FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD}")
    wait_answering(proc, f"http://127.0.0.1:{port}/healthcheck")
    return Flower(proc, port)


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the IPv4/IPv6 sockets listening on ``port`` (from /proc/net)."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        for row in path.read_text().splitlines()[1:] if path.exists() else []:
            local, state = row.split()[1], row.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


@pytest.mark.slow
def test_flower_listens_on_loopback_only_and_its_password_is_on_no_command_line(flower):
    assert listening_addresses(flower.port) == {"127.0.0.1"}
    command_lines = {}
    for entry in Path("/proc").iterdir():
        try:
            command_lines[entry.name] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
    assert "flower" in command_lines[str(flower.proc.pid)]
    assert not [cmd for cmd in command_lines.values() if PASSWORD in cmd]


@pytest.mark.slow
@pytest.mark.parametrize(
    "auth", [None, (USER, "wrong"), ("admin", PASSWORD)], ids=["none", "wrong-password", "wrong-user"]
)
@pytest.mark.parametrize("path", ["/", "/tasks", "/api/workers", "/api/tasks"])
def test_flower_answers_401_without_the_right_credentials(flower, path, auth):
    r = requests.get(f"{flower.url}{path}", auth=auth, timeout=10)
    assert r.status_code == 401
    if not path.startswith("/api/"):  # the pages ask the browser for credentials; the API just refuses
        assert r.headers["WWW-Authenticate"] == 'Basic realm="flower"'


@pytest.mark.slow
@pytest.mark.parametrize("auth", [(USER, PASSWORD), None], ids=["signed-in", "refused"])
@pytest.mark.parametrize("path", ["/", "/tasks", "/api/workers", "/static/css/flower.css"])
def test_flower_forbids_framing_of_every_answer(flower, path, auth):
    r = requests.get(f"{flower.url}{path}", auth=auth, timeout=10)
    assert r.status_code in (200, 401), (path, r.status_code)
    assert r.headers["X-Frame-Options"] == "DENY", (path, dict(r.headers))
    assert r.headers["Content-Security-Policy"] == "frame-ancestors 'none'", path


@pytest.mark.slow
def test_flower_lists_the_worker_and_the_pipeline_tasks_that_ran(flower, stack, api, unique):
    http = requests.Session()
    http.auth = (USER, PASSWORD)
    for path, payload in [("tutors", tutor(f"{unique}-T")), ("students", student(f"{unique}-ST"))]:
        api.wait_finished(api.submit(path, payload)["ingestion_id"])

    worker = f"worker-{os.getpid()}@{socket.gethostname()}"

    def worker_listed():
        r = http.get(f"{flower.url}/api/workers", params={"refresh": "1"}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json().get(worker)

    info = wait_until(worker_listed, 30, what=f"Flower to list {worker}")
    assert {q["name"] for q in info["active_queues"]} == {"etl", "jobs", "lookups", "uploads", "dead_letter"}

    def pipeline_succeeded():
        r = http.get(f"{flower.url}/api/tasks", timeout=10)
        assert r.status_code == 200, r.text
        tasks = [t for t in r.json().values() if t["name"] in PIPELINE]
        done = {t["name"] for t in tasks if t["state"] == "SUCCESS"}
        return tasks if done == PIPELINE else None

    tasks = wait_until(pipeline_succeeded, 30, what="Flower to show etl.validate/enrich/persist succeeded")
    assert {t["worker"] for t in tasks} == {worker}
    assert all(t["state"] == "SUCCESS" for t in tasks), [(t["name"], t["state"]) for t in tasks]
