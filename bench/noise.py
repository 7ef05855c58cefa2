"""CPU time of other programs, and of the database and Redis servers, during a phase.

Counted every second over all processes that are not the benchmark's own (itself and its
descendants). PostgreSQL and Redis are counted apart ("servers"): they serve the benchmark but
may serve others too. Given the benchmark's database, a PostgreSQL backend serving another
database counts as another program (``postgres (other databases)``), so that a test suite on the
same server does not swell the servers' figure; PostgreSQL's shared processes (checkpointer,
WAL writer, autovacuum) and Redis count as servers whoever they work for. A process that starts
and ends between two samples is missed, so both are lower bounds.
"""

from __future__ import annotations

import os
import re
import threading
import time

import psutil

SHARED = ("postgres", "redis-server", "redis-serve")
OTHER_DATABASES = "postgres (other databases)"
# A client backend's title: "postgres: [<cluster>: ]<user> <database> <host>(<port>) <state>"
_BACKEND = re.compile(r"^postgres: (?:\S+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])")


def other_database(title: str, database: str | None) -> bool:
    """``title`` (a postgres process's) is a client backend of a database but ``database`` (or one
    named after it, as the hostile phase's ``etl_app_bench_hostile``)."""
    match = _BACKEND.match(title)
    return bool(database and match and not match.group(1).startswith(database))


def _program(argv: list[str]) -> str:
    """A short name: the script run by an interpreter (``pytest``, ``celery``), else the executable."""
    words = [os.path.basename(a) for a in argv[:3] if a and not a.startswith("-")]
    if len(words) > 1 and words[0].startswith("python"):
        return words[1]
    return words[0] if words else "?"


class ForeignCpu:
    def __init__(self, interval: float = 1.0, database: str | None = None) -> None:
        self.interval, self.database = interval, database
        self.me = os.getpid()
        self._last: dict[int, float] = {}
        self._total = 0.0
        self._servers = 0.0
        self._by_program: dict[str, float] = {}
        self._scanned_at = 0.0
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="foreign-cpu", daemon=True)

    def start(self) -> ForeignCpu:
        self._scan()
        self._thread.start()
        return self

    def _ours(self) -> set[int]:
        try:
            return {self.me, *(p.pid for p in psutil.Process(self.me).children(recursive=True))}
        except psutil.Error:
            return {self.me}

    def _scan(self) -> None:
        with self._scan_lock:  # the thread and seconds() both scan: one at a time
            self._scan_once()

    def _scan_once(self) -> None:
        ours = self._ours()
        now = time.time()
        seen: dict[int, float] = {}
        added = {False: 0.0, True: 0.0}  # by "is a server"
        by_program: dict[str, float] = {}
        for proc in psutil.process_iter(["name", "cmdline", "cpu_times", "create_time"]):
            info = proc.info
            if proc.pid in ours or info["cpu_times"] is None:
                continue
            used = info["cpu_times"].user + info["cpu_times"].system
            seen[proc.pid] = used
            server = (info["name"] or "").startswith(SHARED)
            if server and other_database(" ".join(info["cmdline"] or []), self.database):
                server = False
            if proc.pid in self._last:
                delta = used - self._last[proc.pid]
            elif self._scanned_at and (info["create_time"] or 0) >= self._scanned_at:
                delta = used  # started since the last scan: all its time is new
            else:
                delta = 0.0
            added[server] += delta
            if delta and not server:
                title = " ".join(info["cmdline"] or [])
                name = (
                    OTHER_DATABASES
                    if other_database(title, self.database)
                    else _program(info["cmdline"] or [info["name"] or "?"])
                )
                by_program[name] = by_program.get(name, 0.0) + delta
        with self._lock:
            for name, delta in by_program.items():
                self._by_program[name] = self._by_program.get(name, 0.0) + delta
            self._last = seen
            self._total += added[False]
            self._servers += added[True]
            self._scanned_at = now

    def seconds(self) -> tuple[float, float]:
        """CPU seconds since start: (other programs, PostgreSQL and Redis), freshly scanned."""
        try:
            self._scan()
        except Exception:  # noqa: BLE001 - the last periodic scan will do
            pass
        with self._lock:
            return self._total, self._servers

    def programs(self) -> dict[str, float]:
        """Other programs' CPU seconds since start, by program."""
        with self._lock:
            return dict(self._by_program)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._scan()
            except Exception:  # noqa: BLE001 - a sampling hiccup must not end the benchmark
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3)
