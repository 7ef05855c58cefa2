"""RabbitMQ as the broker of a test: a virtual host of the test's own on the local RabbitMQ node,
made and deleted with ``rabbitmqctl`` (the node itself is never stopped or reconfigured).

On RabbitMQ the unit of isolation is the virtual host (on Redis it is ETL_BROKER_KEY_PREFIX):
queues, exchanges and the native delayed delivery topology of one vhost never meet another's.
``RABBITMQ_URL_TEST`` (``amqp://user:password@host:port``, no vhost) names the node's AMQP
listener; the user needs no rights beyond those ``rabbitmq_vhost`` grants it on its vhost.

    with rabbitmq_vhost("faults") as url:   # amqp://guest:guest@127.0.0.1:5672/etltest-…-faults
        with running_stack(database_url, redis_url, log_dir, CELERY_BROKER_URL=url) as stack: ...
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.helpers.support import RUN_ID

NODE_URL = os.environ.get("RABBITMQ_URL_TEST", "amqp://guest:guest@127.0.0.1:5672").rstrip("/")
RABBITMQCTL = shutil.which("rabbitmqctl") or (
    "/usr/sbin/rabbitmqctl" if os.path.exists("/usr/sbin/rabbitmqctl") else None
)
CTL_TIMEOUT_SECONDS = 60


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` with these arguments (quiet, no table headers); its stdout. Fails the
    test with rabbitmqctl's own words when it fails."""
    if RABBITMQCTL is None:
        raise RuntimeError("rabbitmqctl is not installed")
    proc = subprocess.run(
        [RABBITMQCTL, "--quiet", *args], capture_output=True, text=True, timeout=CTL_TIMEOUT_SECONDS, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return proc.stdout


def require_rabbitmq() -> None:
    """Skip the calling test when there is no ``rabbitmqctl`` to make its vhost with."""
    if RABBITMQCTL is None:
        pytest.skip("rabbitmqctl is not installed: the RabbitMQ broker tests need a local RabbitMQ node")


def vhost_url(vhost: str) -> str:
    """The broker URL of ``vhost`` on the node of RABBITMQ_URL_TEST."""
    return f"{NODE_URL}/{quote(vhost, safe='')}"


@contextmanager
def rabbitmq_vhost(label: str = "") -> Iterator[str]:
    """A new vhost ``etltest-<run id>-<random>[-label]`` on the local node, the test user (the
    user of RABBITMQ_URL_TEST) allowed everything in it; yields its broker URL. The vhost goes at
    the end, with every queue and message in it."""
    require_rabbitmq()
    vhost = f"etltest-{RUN_ID}-{uuid.uuid4().hex[:6]}" + (f"-{label}" if label else "")
    user = urlsplit(NODE_URL).username or "guest"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield vhost_url(vhost)
    finally:
        rabbitmqctl("delete_vhost", vhost)


def vhost_of(url: str) -> str:
    """The vhost of a broker URL (``/`` when the URL names none)."""
    return unquote(urlsplit(url).path[1:]) or "/"


def queue_types(url: str) -> dict[str, str]:
    """``{queue name: type}`` (``quorum``, ``classic``, …) of every queue in the vhost of ``url``,
    as RabbitMQ lists them."""
    out = rabbitmqctl("list_queues", "-p", vhost_of(url), "--no-table-headers", "name", "type")
    return dict(line.split("\t")[:2] for line in out.splitlines() if "\t" in line)


def queue_messages(url: str) -> dict[str, tuple[int, int]]:
    """``{queue name: (ready, unacknowledged)}`` of every queue in the vhost of ``url``."""
    out = rabbitmqctl(
        "list_queues", "-p", vhost_of(url), "--no-table-headers", "name", "messages_ready", "messages_unacknowledged"
    )
    rows = (line.split("\t") for line in out.splitlines() if line.count("\t") >= 2)
    return {name: (int(ready), int(unacked)) for name, ready, unacked in rows}
