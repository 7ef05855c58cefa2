"""A prefork worker whose broker connection is lost while its main process is part-way through
reading a pool process's result keeps working (etl_app.runtime.pool_partial_reads).

A real ``celery worker`` (one pool process, tests/helpers/big_error_app.py) on a RabbitMQ virtual
host: a task fails with a 1 MB error; its pool process is held (SIGSTOP) while writing that error
to the main process, so the main process has read only part of it; RabbitMQ then closes the
worker's connection (``close_all_connections``), which resets the worker's event loop. Once the
pool process goes on, the rest of the error is read, and the next task runs. Without the patch
the main process reads the rest of the error as a new message, waits for good, and the worker runs
nothing more (the next task stays received and unacknowledged)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from etl_app.runtime.pool_partial_reads import RESUMED

from tests.helpers.hosts import RabbitVhost
from tests.helpers.procs import ROOT, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CONNECTED = "Connected to amqp://"


@pytest.fixture
def vhost() -> Iterator[RabbitVhost]:
    if reason := RabbitVhost.available():
        pytest.skip(f"no RabbitMQ on 127.0.0.1:5672: {reason}")
    vhost = RabbitVhost(f"etl-partial-{os.getpid():x}").create()
    try:
        yield vhost
    finally:
        vhost.delete()


def _wchan(pid: int) -> str:
    return Path(f"/proc/{pid}/wchan").read_text()


def test_a_result_read_part_way_when_the_connection_is_lost_is_read_to_its_end(vhost, tmp_path):
    url = vhost.url("127.0.0.1", 5672, heartbeat=0)
    log_path, marker = tmp_path / "worker.log", tmp_path / "pool-process"
    env = {**os.environ, "BIG_ERROR_BROKER": url, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "celery", "-A", "tests.helpers.big_error_app", "worker", "-c", "1"]
    command += ["--loglevel", "INFO", "--without-mingle", "--without-gossip", "--without-heartbeat"]
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    client = Celery("client", broker=url)
    child = None
    try:
        wait_until(lambda: "ready." in log_path.read_text(), 60, what="the worker to start")
        client.send_task("big_error.fail", args=[str(marker)])
        wait_until(marker.exists, 30, 0.01, what="the task to start")
        child = int(marker.read_text())

        # hold the main process, so the pool process fills the pipe and waits to write the rest
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: "pipe_write" in _wchan(child), 30, 0.001, what="the pool process to wait on the pipe")
            os.kill(child, signal.SIGSTOP)
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        time.sleep(1)  # the main process reads what the pipe holds: part of the error

        vhost.close_connections("test: the broker connection is lost")
        wait_until(lambda: log_path.read_text().count(CONNECTED) >= 2, 30, what="the worker to reconnect")
        os.kill(child, signal.SIGCONT)
        child = None

        pong = client.send_task("big_error.ping")
        wait_until(
            lambda: f"big_error.ping[{pong.id}] succeeded" in log_path.read_text(),
            30,
            what="the next task to run after the reconnection",
        )
        text = log_path.read_text()
        assert "ValueError" in text and RESUMED in text, text[-3000:]
        assert "did not finish writing" not in text
    finally:
        if child is not None:
            os.kill(child, signal.SIGCONT)
        os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool process
        worker.wait(timeout=30)
