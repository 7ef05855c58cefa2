"""The broker under the fault tests, Redis or RabbitMQ, behind one small interface.

:class:`PrivateRabbit` is a RabbitMQ node of the tests' own (its own node name, ports, data
directory and config file), so that a test can stop and start the whole node, as an operator's
restart does, without touching the machine's RabbitMQ or anything else using it. Its data
survives a restart, as a production node's does (durable queues, persistent messages).

:class:`RedisBroker` and :class:`RabbitBroker` give the fault stacks what differs between the
two: the environment a stack's processes get (each stack has its own key prefix on Redis, its
own vhost on RabbitMQ), a restart, and how many pipeline messages the broker holds.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.helpers.procs import free_port, wait_until
from tests.helpers.services import PrivateRedis
from tests.helpers.support import KEY_PREFIX, wipe_keys

RABBIT_ACCOUNT = "rabbitmq"  # rabbitmq-server run as root switches to this account
PIPELINE_QUEUES = ("etl", "lookups")


def rabbitmq_available() -> bool:
    return bool(shutil.which("rabbitmq-server") and shutil.which("rabbitmqctl"))


class PrivateRabbit:
    """One RabbitMQ node: ``start`` (and wait until it serves), ``stop`` (the whole node, data kept)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="etl-faults-rabbit-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"etlfaults{uuid.uuid4().hex[:6]}@localhost"
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            # the tests' messages are small; a node on a busy disk must not block publishers
            "disk_free_limit.absolute = 50MB\n"
        )
        (self.root / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0:
            account = pwd.getpwnam(RABBIT_ACCOUNT)
            self.root.chmod(0o755)
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
        }
        self.started = False
        self.paused = False
        self.pid: int | None = None

    def ctl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        done = subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def url(self, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    def start(self) -> None:
        if self.started:
            return
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env, cwd=self.root, check=True, timeout=60)
        # until the node has registered with epmd, await_startup fails at once: ask again
        wait_until(self._status_ok, 90, 0.5, what=f"RabbitMQ node {self.node} to start")
        self.pid = int(self.ctl("eval", "list_to_integer(os:getpid()).").strip())
        self.started = True

    def _status_ok(self) -> bool:
        done = subprocess.run(
            ["rabbitmqctl", "-n", self.node, "await_startup", "--timeout", "60"],
            env=self.env,
            capture_output=True,
            timeout=90,
        )
        return done.returncode == 0

    def stop(self) -> None:
        """The whole node stops: every connection drops; durable queues keep their messages. A
        paused node is killed paused (SIGKILL), as PrivateRedis does: resumed first, it would
        still take the publishes its clients sent while it was stopped, and hand them to a
        worker, in the moment before it stops."""
        if self.paused:
            for pid in self._beam_pids():
                os.kill(pid, signal.SIGKILL)
            self.paused = False
        elif self.started:
            self.ctl("stop", check=False, timeout=60)
        wait_until(lambda: not self._beam_running(), 30, what=f"{self.node} to exit")
        self.started = False

    def _beam_pids(self) -> list[int]:
        """The node's Erlang VM (asked of the node once it serves: its command line does not name
        it), if it still runs."""
        if self.pid is None:
            return []
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return []
        with open(f"/proc/{self.pid}/stat") as stat:
            if stat.read().split(")")[-1].split()[0] == "Z":
                return []
        return [self.pid]

    def _beam_running(self) -> bool:
        return bool(self._beam_pids())

    def pause(self) -> None:
        """SIGSTOP to the node: connections stay open and nothing answers."""
        for pid in self._beam_pids():
            os.kill(pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        for pid in self._beam_pids():
            os.kill(pid, signal.SIGCONT)
        self.paused = False

    def add_vhost(self, vhost: str) -> None:
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        if self.started:
            self.ctl("delete_vhost", vhost, check=False)

    def queues(self, vhost: str) -> dict[str, dict[str, Any]]:
        """name → {"ready", "unacked", "type"} of every queue of the vhost."""
        out = self.ctl(
            "list_queues",
            "-p",
            vhost,
            "--formatter",
            "json",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "type",
        )
        rows = json.loads(out or "[]")
        return {
            row["name"]: {
                "ready": int(row["messages_ready"] or 0),
                "unacked": int(row["messages_unacknowledged"] or 0),
                "type": row["type"],
            }
            for row in rows
        }

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class RedisBroker:
    """The private Redis as broker (and cache); a stack's keys carry its own prefix."""

    name = "redis"

    def __init__(self, server: PrivateRedis) -> None:
        self.server = server

    def stack_env(self) -> dict[str, str]:
        return {"ETL_BROKER_KEY_PREFIX": f"{KEY_PREFIX}f{uuid.uuid4().hex[:8]}:"}

    def stop(self, graceful: bool = False) -> None:
        """SIGKILL (or, ``graceful``, SIGTERM: a shutdown as a service manager does it); either way
        this Redis keeps nothing on disk, so what it held is gone."""
        if graceful:
            self.server.shutdown()
        else:
            self.server.stop()

    def start(self) -> None:
        self.server.resume()
        self.server.start()

    def pause(self) -> None:
        self.server.pause()

    def pipeline_messages(self, env: dict[str, str], queued: bool = True) -> int:
        from tests.helpers.faultlib import pipeline_messages

        return pipeline_messages(self.server.client(), env["ETL_BROKER_KEY_PREFIX"], queued=queued)

    def queue_length(self, env: dict[str, str], queue: str = "etl") -> int:
        """Messages waiting in ``queue``."""
        return self.server.client().llen(f"{env['ETL_BROKER_KEY_PREFIX']}{queue}")

    def queue_wait(self, env: dict[str, str], cache: Any) -> float:
        """How long the oldest message still waiting in ``etl`` has waited (0 when the queue is
        empty): read from that message, the last element of the list."""
        raw = self.server.client().lindex(f"{env['ETL_BROKER_KEY_PREFIX']}etl", -1)
        return 0.0 if raw is None else time.time() - float(json.loads(raw)["headers"]["etl_sent_at"])

    def flush(self, env: dict[str, str]) -> int:
        """Every key of the broker gone; how many there were."""
        client = self.server.client()
        n = client.dbsize()
        client.flushall()
        return n

    def cleanup(self, env: dict[str, str]) -> None:
        wipe_keys(self.server.url(0), env["ETL_BROKER_KEY_PREFIX"])


class RabbitBroker:
    """The private RabbitMQ node as broker (the cache stays on the private Redis); each stack
    has a vhost of its own."""

    name = "rabbitmq"

    def __init__(self, node: PrivateRabbit) -> None:
        self.node = node

    def stack_env(self) -> dict[str, str]:
        vhost = f"etl-faults-{uuid.uuid4().hex[:8]}"
        self.node.add_vhost(vhost)
        return {"CELERY_BROKER_URL": self.node.url(vhost), "ETL_BROKER_KEY_PREFIX": f"{KEY_PREFIX}{vhost}:"}

    @staticmethod
    def vhost(env: dict[str, str]) -> str:
        return env["CELERY_BROKER_URL"].rsplit("/", 1)[1]

    def stop(self, graceful: bool = True) -> None:
        self.node.stop()

    def start(self) -> None:
        self.node.resume()
        self.node.start()

    def pause(self) -> None:
        self.node.pause()

    def pipeline_messages(self, env: dict[str, str], queued: bool = True) -> int:
        """Messages in the pipeline queues: delivered and not acknowledged, plus (``queued``) ready."""
        queues = self.node.queues(self.vhost(env))
        mine = [q for name, q in queues.items() if name in PIPELINE_QUEUES]
        return sum(q["unacked"] + (q["ready"] if queued else 0) for q in mine)

    def queue_length(self, env: dict[str, str], queue: str = "etl") -> int:
        """Messages ready in ``queue``, as RabbitMQ counts them (passive ``queue.declare``)."""
        from kombu import Connection

        from etl_app.pipeline.queues import rabbitmq_ready

        with Connection(env["CELERY_BROKER_URL"], connect_timeout=10) as conn:
            return rabbitmq_ready(conn, queue)

    def queue_wait(self, env: dict[str, str], cache: Any) -> float:
        """How long the oldest message still waiting in ``etl`` has waited (0 when the queue is
        empty, or no worker has taken a message yet). AMQP cannot show a queued message: this is
        the queue's head as the workers record it in the cache Redis
        (:mod:`etl_app.pipeline.queue_head`), what the sweeper measures against."""
        from etl_app.pipeline.queue_head import read_head

        head = read_head(cache, env["ETL_BROKER_KEY_PREFIX"], "etl")
        return 0.0 if head is None or not self.queue_length(env) else time.time() - head

    def flush(self, env: dict[str, str]) -> int:
        """Every message of the stack's vhost gone (its queues purged; none may have a consumer);
        how many there were, as the broker counted them when it purged."""
        from kombu import Connection

        names = list(self.node.queues(self.vhost(env)))
        with Connection(env["CELERY_BROKER_URL"], connect_timeout=5) as conn:
            channel = conn.channel()
            return sum(channel.queue_purge(name) or 0 for name in names)

    def cleanup(self, env: dict[str, str]) -> None:
        self.node.delete_vhost(self.vhost(env))
