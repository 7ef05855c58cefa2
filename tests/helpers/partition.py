"""Workers on several hosts, and a partition: the scenario of tests/faults/test_faults_hosts.py,
also run by hand with ``make hosts-demo`` (``python -m tests.helpers.partition``, root only).

Three hosts (network namespaces, tests/helpers/hosts.py): web on h1; a worker and a beat on h2
and on h3. PostgreSQL, Redis (the cache, and the broker unless RabbitMQ is) are private servers in
the root namespace, listening on the hosts' link too; RabbitMQ is the machine's own, in a virtual
host of the run's own, reached through a relay on the link. A large batch is submitted, and while
h2 holds some of it, h2's link is cut for longer than the broker needs to notice, then restored:

- Redis: h2's messages stay delivered-and-unacknowledged in the broker until the visibility
  timeout (``CELERY_VISIBILITY_TIMEOUT``, short here), then h3 puts them back on the queue and runs
  them;
- RabbitMQ: the broker hears no heartbeat from h2 (``?heartbeat=`` on the broker URL, short here),
  closes its connection and gives its unacknowledged messages to h3 at once.

Either way PostgreSQL hears nothing from h2 either: TCP keepalives (``ETL_DB_KEEPALIVE_SECONDS``,
short here) end h2's sessions a few seconds after the cut, and with them its open transactions
and their row locks, so h3 runs the chunks it is given again without waiting for h2. h2's tasks
get errors from their dead connections. Once the link is back h2 goes on (its late writes change
nothing: stages skip settled records, persist upserts) and consumes again; small batches keep
coming until it has run one it received after the restore. :meth:`MultiHost.run` returns the
:class:`Figures`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from etl_app.db import make_engine
from etl_app.migrate import upgrade
from etl_app.names import PIPELINE_TASKS

from tests.helpers.faultlib import Answers, RecordingApi, outcome, swept
from tests.helpers.hosts import Hosts, RabbitVhost, TcpForwarder, netns_available
from tests.helpers.payloads import student
from tests.helpers.procs import ROOT, Stack, wait_until
from tests.helpers.services import PrivatePostgres, PrivateRedis
from tests.helpers.support import API_KEY, KEY_PREFIX

BROKERS = ("redis", "rabbitmq")
RABBITMQ = ("127.0.0.1", 5672)  # the machine's RabbitMQ, reached through a relay on the hosts' link
VISIBILITY_TIMEOUT = 20  # Redis: an unacknowledged message goes back to its queue after this
RESTORE_EVERY = 5  # Redis: how often a worker looks for such messages (CELERY_UNACKED_RESTORE_SECONDS)
HEARTBEAT = 10  # RabbitMQ: the broker closes a connection silent for about two heartbeats
KEEPALIVE = 3  # PostgreSQL: a session silent this long is probed, and ends about twice it after the cut
# The link stays down longer than the broker needs to give the cut host's messages to another one
# (measured: Redis 22-25 s, RabbitMQ 22-28 s after the cut).
CUT_SECONDS = {"redis": VISIBILITY_TIMEOUT + RESTORE_EVERY + 10, "rabbitmq": 3 * HEARTBEAT + 10}
BATCH = 20_000
TRICKLE = 1_000  # records per small batch after the restore, until the cut host has run one
ENV = {
    "ETL_SWEEP_INTERVAL_SECONDS": "2",
    "ETL_OUTBOX_LEASE_SECONDS": "60",
    "ETL_RETRY_BACKOFF_SECONDS": "1",
    "ETL_RETRY_BACKOFF_MAX_SECONDS": "4",
    "ETL_CHUNK_SIZE": "250",
    "ETL_SCHEDULE_RETENTION": "2",  # a job both beats send every 2 seconds: its lock lets one run at a time
    "ETL_DB_KEEPALIVE_SECONDS": str(KEEPALIVE),
}
JOB = "retention"

_TASK = r"Task (\S+)\[([0-9a-f-]{36})\]"
RECEIVED = re.compile(_TASK + r" received")
_SUCCEEDED, _RETRIED, _FAILED = r" succeeded in", r" retry:", r" raised unexpected"
SUCCEEDED = re.compile(_TASK + _SUCCEEDED)
RETRIED = re.compile(_TASK + _RETRIED)
BY_BROKER = re.compile(_TASK + r" redelivered by the broker")  # tests/helpers/redelivery_app.py
STAMP = "%Y-%m-%d %H:%M:%S,%f"  # how a log line begins (local time)
# the line that ends a task (succeeded, retried or failed), with its time
ENDED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?" + _TASK + f"(?:{_SUCCEEDED}|{_RETRIED}|{_FAILED})", re.M
)
CUT_ATTEMPTS = 5
SENT_BY_BEAT = f"Sending due task {JOB} "


def ids(pattern: re.Pattern[str], text: str, names: tuple[str, ...] | None = None) -> list[str]:
    """The task ids of the lines ``pattern`` finds (only tasks of ``names``, if given)."""
    return [m.group(2) for m in pattern.finditer(text) if names is None or m.group(1) in names]


def held(text: str, before: float | None = None) -> set[str]:
    """Pipeline tasks a worker's log shows received and not finished (succeeded, retried, failed).
    With ``before`` (a ``time.time()``): not finished before that moment; a task whose end the log
    shows later counts as held, for its acknowledgement went out after that moment too."""
    cutoff = None if before is None else datetime.fromtimestamp(before)
    done = {m.group(3) for m in ENDED.finditer(text) if cutoff is None or datetime.strptime(m.group(1), STAMP) < cutoff}
    return set(ids(RECEIVED, text, PIPELINE_TASKS)) - done


@dataclass
class Figures:
    """What a partition did. Times in seconds; ``None``: it did not happen."""

    broker: str
    submitted: int = 0
    persisted: int = 0
    dead: int = 0
    cut_s: float = 0.0  # how long the link was down
    held_at_cut: int = 0  # pipeline tasks the cut host had received and not finished when its link went down
    redelivered_after_cut_s: float | None = None  # the cut → the other host received the first of them
    cut_host_sessions: int = -1  # PostgreSQL sessions of the cut host still there when the link came back
    moved: int = 0  # of those, received again by the other host
    settled_after_cut_s: float | None = None  # the cut → the large batch settled
    settled_after_restore_s: float | None = None  # the restore → the large batch settled (< 0: before it)
    rejoined_after_restore_s: float | None = None  # the restore → the cut host finished a task received after it
    redelivered: int = 0  # messages the broker delivered again (their delivery_info says so)
    duplicates: int = 0  # deliveries of a task id beyond its first, logged retries not counted: the
    # broker's redeliveries, the next stages sent again by a stage that ran twice, a retry sent late
    ran_twice: int = 0  # messages whose task body started more than once (the delivery counter)
    swept: int = 0  # records the outbox sweeper re-sent
    beat_back_after_restore_s: float | None = None  # the restore → the cut host's beat sent the job again
    beat_sends: dict[str, int] = field(default_factory=dict)  # host → times its beat sent the job
    job_runs: dict[str, int] = field(default_factory=dict)  # status → job_runs rows of the job
    abandoned: int = 0  # failed runs of the job closed as "abandoned" that the cut host had started:
    # PostgreSQL ended its session during the cut, which released its lock, and the next run took over
    overlapping_runs: int = 0  # successful runs of the job that started before the previous one finished
    runs_of_one_send: int = 0  # sends of the job that ran more than once, not counting redeliveries
    settle_s: float = 0.0  # submit → every record settled

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


def students(prefix: str, n: int) -> list[dict[str, Any]]:
    return [student(f"{prefix}-{i:05d}", name=f"Student {i}", grade_level=1 + i % 16) for i in range(n)]


class MultiHost:
    """The three hosts, the servers and the processes (a context manager: everything goes at its end)."""

    def __init__(self, broker: str, log_dir: Path) -> None:
        assert broker in BROKERS, broker
        self.broker = broker
        self.log_dir = log_dir
        self.prefix = f"{KEY_PREFIX}h{uuid.uuid4().hex[:6]}:"
        self.answers = Answers()
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> MultiHost:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def _start(self) -> None:
        hosts = self.hosts = Hosts(3)
        self._exit.callback(hosts.destroy)
        hosts.create()
        gateway = hosts.gateway
        self.pg = PrivatePostgres(database="etl_app_hosts", listen=(gateway,), trust=(str(hosts.subnet),))
        self._exit.callback(self.pg.destroy)
        self.pg.start()
        self.pg.create_database()
        upgrade(self.pg.url)
        self.engine = make_engine(self.pg.url, pool_size=2, application_name="etl_app-hosts-test")
        self._exit.callback(self.engine.dispose)
        self.redis = PrivateRedis(bind=(gateway,))
        self._exit.callback(self.redis.destroy)
        self.redis.start()
        redis_url = f"redis://{gateway}:{self.redis.port}/0"
        env = {
            **ENV,
            "DATABASE_URL": f"postgresql://postgres@{gateway}:{self.pg.port}/{self.pg.database}",
            "REDIS_URL": redis_url,
            "ETL_API_KEYS": API_KEY,
            "ETL_BROKER_KEY_PREFIX": self.prefix,
        }
        if self.broker == "redis":
            env |= {
                "CELERY_BROKER_URL": redis_url,
                "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
                "CELERY_UNACKED_RESTORE_SECONDS": str(RESTORE_EVERY),
            }
        else:
            self.vhost = RabbitVhost()
            self._exit.callback(self.vhost.delete)
            self.vhost.create()
            self.relay = TcpForwarder((gateway, 0), RABBITMQ)
            self._exit.callback(self.relay.stop)
            env["CELERY_BROKER_URL"] = self.vhost.url(gateway, self.relay.port, HEARTBEAT)
        self.env = env
        self.stacks = {h: Stack(env, self.log_dir, hosts.exec_prefix(h)) for h in (1, 2, 3)}
        for stack in self.stacks.values():
            self._exit.callback(stack.stop)
        self.workers = {
            h: self.stacks[h].worker(
                concurrency=2,
                name=f"worker-h{h}",
                hostname=f"etl@h{h}",
                app="tests.helpers.redelivery_app:celery",
                PYTHONPATH=str(ROOT),
            )
            for h in (2, 3)
        }
        self.beats = {h: self.stacks[h].beat(name=f"beat-h{h}") for h in (2, 3)}
        self.stacks[1].web(bind=hosts.address(1))
        self.api = RecordingApi(self.stacks[1].web_url, self.answers, timeout=120)
        # a connection per request: gunicorn closes an idle one after 2 s, the batches come every 2 s,
        # and a POST sent on a connection the server is closing fails without an answer
        self.api.http.headers["Connection"] = "close"

    # -- the scenario ---------------------------------------------------------------------------

    def run(self, batch: int = BATCH, cut_for: float | None = None, say=print) -> Figures:
        cut_for = CUT_SECONDS[self.broker] if cut_for is None else cut_for
        fig = Figures(self.broker)
        w2, w3 = self.workers[2], self.workers[3]
        tag = uuid.uuid4().hex[:8]
        wait_until(
            lambda: all(SENT_BY_BEAT in b.log() for b in self.beats.values()), 60, what="both beats to send the job"
        )
        started = time.monotonic()
        big = self.api.submit("students/batch", students(tag, batch))["ingestion_id"]
        say(f"submitted {batch} students to web on h1 ({self.hosts.address(1)})")

        # The cut is made while h2's log shows tasks received and unfinished; those it then held are
        # the ones it had not finished when the link was down. A short task can finish, and its
        # acknowledgement reach the broker, between the reading of the log and the cut: then h2
        # held nothing of it, and the broker has nothing to give another host. If h2 held nothing
        # at all, the link comes back at once (a blip) and is cut again; if the batch settled
        # meanwhile (the other host ran the rest: a fast pipeline runs 20,000 records in about as
        # long as two blips take), another batch is sent and becomes the batch the cut is made in.
        for attempt in range(CUT_ATTEMPTS):
            if attempt and outcome(self.engine, [big]).settled:
                big = self.api.submit("students/batch", students(f"{tag}-b{attempt}", batch))["ingestion_id"]
                say(f"the batch settled before a cut found h2 holding any of it: submitted another {batch}")
            wait_until(lambda: held(w2.log()), 60, 0.02, what="h2 to hold tasks of the batch")
            h3_before = len(w3.log())
            self.hosts.cut(2)
            cut_at, down_since = time.monotonic(), time.time()
            time.sleep(1)  # h2 writes the end of what ended before the cut
            held_at_cut = held(w2.log(), before=down_since)
            if held_at_cut:
                break
            say("h2 had finished what it held before its link went down: link restored, to be cut again")
            self.hosts.restore(2)
        else:
            raise AssertionError(f"h2 held no task at any of {CUT_ATTEMPTS} cuts")
        self.at_cut = self._snapshot(held_at_cut, h3_before)
        fig.held_at_cut = len(held_at_cut)
        say(f"cut h2's link with {len(held_at_cut)} tasks received and unfinished; down for {cut_for:g} s")

        def big_settled() -> bool:
            return outcome(self.engine, [big]).settled

        def watch(until: float) -> None:
            while time.monotonic() < until:
                now = time.monotonic()
                if fig.redelivered_after_cut_s is None and held_at_cut & set(ids(RECEIVED, w3.log()[h3_before:])):
                    fig.redelivered_after_cut_s = round(now - cut_at, 1)
                    say(f"h3 received a task h2 held, {fig.redelivered_after_cut_s} s after the cut")
                if fig.settled_after_cut_s is None and big_settled():
                    fig.settled_after_cut_s = round(now - cut_at, 1)
                    say(f"the batch settled {fig.settled_after_cut_s} s after the cut")
                time.sleep(0.25)

        watch(cut_at + cut_for)
        self.at_restore = self._snapshot(held_at_cut, h3_before)
        fig.cut_host_sessions = self._sessions_of(self.hosts.address(2))
        self.hosts.restore(2)
        restored_at = time.monotonic()
        fig.cut_s = round(restored_at - cut_at, 1)
        h2_before, beat_before = len(w2.log()), len(self.beats[2].log())
        say("restored h2's link")

        def rejoined() -> bool:
            after = w2.log()[h2_before:]
            return bool(set(ids(RECEIVED, after)) & set(ids(SUCCEEDED, after)))

        deadline = restored_at + 180
        next_trickle = restored_at
        while time.monotonic() < deadline:
            now = time.monotonic()
            if fig.rejoined_after_restore_s is None and rejoined():
                fig.rejoined_after_restore_s = round(now - restored_at, 1)
                say(f"h2 ran a task it received after the restore, {fig.rejoined_after_restore_s} s after it")
            if fig.rejoined_after_restore_s is None and now >= next_trickle:
                self.api.submit("students/batch", students(f"{tag}-t{int(now * 10)}", TRICKLE))
                next_trickle = now + 2
            watch(now + 0.5)
            if fig.beat_back_after_restore_s is None and SENT_BY_BEAT in self.beats[2].log()[beat_before:]:
                fig.beat_back_after_restore_s = round(now - restored_at, 1)
                say(f"h2's beat sent the job again, {fig.beat_back_after_restore_s} s after the restore")
            if None not in (fig.rejoined_after_restore_s, fig.settled_after_cut_s, fig.beat_back_after_restore_s):
                break
        if fig.settled_after_cut_s is not None:
            fig.settled_after_restore_s = round(fig.settled_after_cut_s - fig.cut_s, 1)
        if fig.rejoined_after_restore_s is None:
            self._dump_stacks(w2)

        self._settle(timeout=max(30, deadline - time.monotonic()))
        fig.settle_s = round(time.monotonic() - started, 1)
        for beat in self.beats.values():
            beat.stop()
        self._jobs_drained()
        o = outcome(self.engine, self.answers.ingestion_ids)
        fig.submitted, fig.persisted, fig.dead = o.accepted, o.persisted, o.dead
        self._count(fig, held_at_cut, h3_before)
        return fig

    def _snapshot(self, held_at_cut: set[str], h3_before: int) -> str:
        """What the broker, PostgreSQL and h3 show at the cut and just before the restore (printed by
        :meth:`tails` when the test fails): which messages are unacknowledged and how long since
        they were delivered, the restore lock, the queues, every PostgreSQL session (a redelivered
        task waiting for a lock the cut host holds) and h3's last lines."""
        out = []
        with contextlib.suppress(Exception):
            if self.broker == "redis":
                client = self.redis.client()
                now = time.time()
                index = client.zrange(f"{self.prefix}unacked_index", 0, -1, withscores=True)
                entries = []
                for t, score in index:
                    raw = client.hget(f"{self.prefix}unacked", t)
                    task = json.loads(raw)[0]["headers"].get("id", "?") if raw else "(no hash entry)"
                    entries.append(f"{task} age {now - score:.1f}s")
                out.append(f"unacked_index ({len(index)}): " + ", ".join(entries))
                out.append(f"unacked hash: {client.hlen(f'{self.prefix}unacked')}")
                mutex = client.get(f"{self.prefix}unacked_mutex")
                out.append(f"restore mutex: {mutex!r} ttl {client.ttl(f'{self.prefix}unacked_mutex')}")
                out.append(
                    "queues: "
                    + ", ".join(
                        f"{k.decode()}={client.llen(k)}"
                        for k in client.scan_iter(f"{self.prefix}etl*")
                        if client.type(k) == b"list"
                    )
                )
        with contextlib.suppress(Exception), self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT client_addr, state, wait_event_type, wait_event, now() - xact_start AS age, "
                    "left(query, 90) AS q FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY client_addr"
                )
            ).all()
            out += [f"pg: {r.client_addr} {r.state} {r.wait_event_type}/{r.wait_event} {r.age} {r.q!r}" for r in rows]
        h3 = self.workers[3].log()[h3_before:]
        out.append(
            f"h3 since the cut: received {len(ids(RECEIVED, h3))}, succeeded {len(ids(SUCCEEDED, h3))}; last lines:"
        )
        out += h3.splitlines()[-15:]
        out.append(f"held at cut: {sorted(held_at_cut)}")
        return "\n".join(out)

    def _sessions_of(self, address: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE host(client_addr) = :a"), {"a": address}
            ).scalar_one()

    def _dump_stacks(self, worker) -> None:
        """Have a worker that did not come back log where each of its main process's threads
        stands (Celery's SIGUSR1 handler), and keep where its pool processes stand (py-spy, when
        it is installed and may trace), for :meth:`tails` to show."""
        with contextlib.suppress(OSError):
            os.kill(worker.pid, signal.SIGUSR1)
            time.sleep(2)
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            return
        pids = [worker.pid]
        with contextlib.suppress(psutil.Error):
            pids += [c.pid for c in psutil.Process(worker.pid).children(recursive=True)]
        dumps = []
        for pid in pids:
            try:
                done = subprocess.run(
                    [str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30, check=False
                )
                dumps.append(f"py-spy dump of {pid}:\n{done.stdout}{done.stderr}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                dumps.append(f"py-spy dump of {pid}: {exc!r}")
        self.py_spy = "\n".join(dumps)

    def _settle(self, timeout: float) -> None:
        wait_until(
            lambda: outcome(self.engine, self.answers.ingestion_ids).settled,
            timeout,
            0.5,
            what="every record to settle",
        )

    def _jobs_drained(self) -> None:
        """Wait until the job's runs stop changing (the beats are stopped; what they sent has run)."""
        last: list[Any] = [None, 0.0]

        def quiet() -> bool:
            now = self._job_runs()
            state = [(r.id, r.status) for r in now]
            if state != last[0] or any(r.status == "running" for r in now):
                last[:] = [state, time.monotonic()]
                return False
            return time.monotonic() - last[1] >= 4

        wait_until(quiet, 90, 0.5, what=f"the {JOB} runs the beats sent to finish")

    def _job_runs(self) -> list[sa.Row]:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT * FROM job_runs WHERE job = :job ORDER BY started_at, id"), {"job": JOB}
            ).all()

    def _count(self, fig: Figures, held_at_cut: set[str], h3_before: int) -> None:
        logs = {h: w.log() for h, w in self.workers.items()}
        received = Counter(i for text in logs.values() for i in ids(RECEIVED, text))
        retried = Counter(i for text in logs.values() for i in ids(RETRIED, text))
        again = {i for i, n in received.items() if n - 1 - retried[i] > 0}
        fig.duplicates = sum(received[i] - 1 - retried[i] for i in again)
        fig.redelivered = sum(len(ids(BY_BROKER, text)) for text in logs.values())
        fig.moved = len(held_at_cut & set(ids(RECEIVED, logs[3][h3_before:])))
        fig.swept = sum(swept(w) for w in self.workers.values())
        client = self.redis.client()
        keys = list(client.scan_iter(f"{self.prefix}etl:deliveries:*", count=1000))
        fig.ran_twice = sum(1 for v in (client.mget(keys) if keys else []) if v is not None and int(v) > 1)

        fig.beat_sends = {f"h{h}": beat.log().count(SENT_BY_BEAT) for h, beat in self.beats.items()}
        runs = self._job_runs()
        fig.job_runs = dict(Counter(r.status for r in runs))
        on_cut_host = set(ids(RECEIVED, logs[2]))
        fig.abandoned = sum(
            1 for r in runs if r.status == "failed" and r.error.startswith("abandoned:") and r.task_id in on_cut_host
        )
        worked = [r for r in runs if r.status == "succeeded"]
        fig.overlapping_runs = sum(1 for a, b in pairwise(worked) if a.finished_at > b.started_at)
        per_task = Counter(r.task_id for r in runs)
        fig.runs_of_one_send = sum(1 for t, n in per_task.items() if n > 1 and t not in again)

    def tails(self, lines: int = 40) -> str:
        """The end of every process's log; more of the cut host's worker (its stack dump, if any)."""
        out = [
            f"----- {moment}\n{getattr(self, name, '(not reached)')}"
            for moment, name in (
                ("at the cut", "at_cut"),
                ("at the restore", "at_restore"),
                ("the cut host's processes", "py_spy"),
            )
        ]
        for stack in self.stacks.values():
            for proc in stack.procs:
                n = lines * 5 if proc is self.workers[2] else lines
                text = proc.log().splitlines()
                state = "running" if proc.alive() else f"exited with {proc.popen.returncode}"
                out.append(f"----- {proc.name} ({state}; last {n} lines)\n" + "\n".join(text[-n:]))
        return "\n".join(out)


# -- by hand: make hosts-demo ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.helpers.partition",
        description="Web on one network namespace, workers and beats on two more, PostgreSQL and the "
        "broker in the root namespace; a large batch, one worker host's link cut mid-batch and "
        "restored; prints what became of the records. Needs root; contacts 10.231.0.0/16 and "
        "127.0.0.1 only, and removes everything it made.",
    )
    parser.add_argument("--broker", choices=(*BROKERS, "both"), default="both")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"students in the large batch ({BATCH})")
    parser.add_argument("--cut", type=float, default=None, help="seconds the link is down (default: per broker)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs and print where")
    args = parser.parse_args(argv)
    reason = netns_available()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    brokers = BROKERS if args.broker == "both" else (args.broker,)
    results = []
    for broker in brokers:
        if broker == "rabbitmq" and (why := RabbitVhost.available()):
            print(f"skipping rabbitmq: {why}", file=sys.stderr)
            continue
        log_dir = Path(tempfile.mkdtemp(prefix=f"etl-hosts-{broker}-"))
        print(f"== {broker} (logs in {log_dir})")
        with MultiHost(broker, log_dir) as mh:
            print(
                f"hosts: h1 {mh.hosts.address(1)} (web), h2 {mh.hosts.address(2)} and h3 {mh.hosts.address(3)} "
                f"(worker, beat); servers on {mh.hosts.gateway}"
            )
            fig = mh.run(batch=args.batch, cut_for=args.cut, say=lambda m: print(f"  {m}"))
        results.append(fig)
        print(f"  {fig.line()}")
        if not args.keep_logs:
            import shutil

            shutil.rmtree(log_dir, ignore_errors=True)
    print()
    columns = (
        ("broker", "broker", 9),
        ("records", "submitted", 8),
        ("dead", "dead", 5),
        ("cut s", "cut_s", 6),
        ("moved after s", "redelivered_after_cut_s", 14),
        ("settled after cut s", "settled_after_cut_s", 20),
        ("rejoined after restore s", "rejoined_after_restore_s", 25),
        ("redelivered", "redelivered", 12),
        ("duplicates", "duplicates", 11),
        ("ran twice", "ran_twice", 10),
        ("swept", "swept", 6),
    )
    print(" ".join(f"{title:>{width}}" for title, _, width in columns))
    for fig in results:
        print(" ".join(f"{getattr(fig, name)!s:>{width}}" for _, name, width in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
