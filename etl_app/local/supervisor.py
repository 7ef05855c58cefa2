"""The process supervisor of `etl-app run`: the Procfile's processes, each started again when it exits.

`etl-app run` used to hand the Procfile to ``honcho start``, which stops every process as soon as
one exits: a worker killed by the OOM killer took the web down with it. :class:`Supervisor` keeps
what honcho did and restarts instead:

- the Procfile is read by honcho's own parser (:func:`honcho.environ.parse_procfile`), and each
  line runs as honcho runs it, ``/bin/sh -c <line>``, in a session and process group of its own,
  so that a signal reaches the program and its own children (a celery worker's pool, gunicorn's
  workers) and a Ctrl-C in the terminal reaches only `etl-app run`;
- every output line is prefixed with the time and the process's name, coloured on a terminal,
  by honcho's :class:`~honcho.printer.Printer`; the supervisor's own lines are the ``system`` ones;
- a process that exits while nobody asked it to (whatever its exit code) is logged (name, pid,
  exit code or signal), what is left of its process group gets SIGTERM (and SIGKILL when it is
  still there after the grace period, before the restart), and it is started again after a
  delay: 1 s, doubling up to 30 s, back to 1 s once it had run 60 s (:class:`Backoff`). The
  others keep running: web answers while a worker restarts;
- the restarts per process are written to ``<ETL_VAR_DIR>/process_restarts.json`` (written to a
  temporary file, then renamed), which the web's ``/metrics`` exports as
  ``etl_process_restarts_total{process=...}`` (:func:`read_restarts`);
- SIGINT (Ctrl-C), SIGTERM or SIGHUP stop them all: SIGTERM to every process group, SIGKILL to
  those still there after a grace period (10 s), or at once on a second Ctrl-C.

Why not supervisord or circus: both are daemons with a configuration format of their own, and
would need a second description of the processes beside the Procfile, which stays the one
description (the same lines for honcho, Heroku-like platforms, systemd and Kubernetes, see
docs/processes.md). supervisord writes a program's output unprefixed (or to its own log files),
gives a process up for good (``FATAL``) when it exits within ``startsecs`` of starting
``startretries`` times in a row, and its restart counts are read over XML-RPC; circus brings
ZeroMQ and Tornado for a job of about two hundred lines here. This module uses no thread (one
``select`` loop reads every pipe), so starting a child with ``preexec_fn`` is safe.

There is no limit on restarts: with the backoff a process that exits at once is started twice a
minute at most, each exit logged with its code. Giving up would leave the rest of the service
running without, say, its workers, which is harder to notice than a restart logged every 30 s;
Ctrl-C stops it all. In production a platform supervises the processes instead (systemd,
Kubernetes; docs/processes.md): this module is for `etl-app run` on one machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import psutil
from honcho.colour import get_colours
from honcho.environ import parse_procfile
from honcho.printer import Message, Printer

from etl_app.config import var_dir
from etl_app.local.processes import die_with_parent

RESTARTS_FILE = "process_restarts.json"
SYSTEM = "system"  # the name on the supervisor's own lines, as honcho's
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_LINE_LIMIT = 64 * 1024  # a longer line without a newline is printed in pieces


def procfile_commands(path: Path, names: Iterable[str]) -> dict[str, str]:
    """The commands of the Procfile's ``names`` lines, in that order; KeyError naming a missing one."""
    processes = parse_procfile(path.read_text()).processes
    missing = [name for name in names if name not in processes]
    if missing:
        raise KeyError(f"{path} has no line for {', '.join(missing)}")
    return {name: processes[name] for name in names}


def restarts_path(env: Mapping[str, str] | None = None) -> Path:
    """Where `etl-app run` counts the restarts of its processes: under ``ETL_VAR_DIR`` (./var)."""
    return Path(var_dir(env)) / RESTARTS_FILE


def read_restarts(path: Path) -> dict[str, int] | None:
    """The restarts per process of the supervisor that writes ``path``; None when there is no
    such file, it cannot be read, or the supervisor that wrote it is gone (a stale file)."""
    try:
        data = json.loads(path.read_text())
        counts = {str(name): int(n) for name, n in data["restarts"].items()}
        pid = int(data["supervisor_pid"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return counts if psutil.pid_exists(pid) else None


def write_restarts(path: Path, counts: Mapping[str, int]) -> None:
    """Write ``path`` whole or not at all: a temporary file renamed over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"supervisor_pid": os.getpid(), "restarts": dict(counts)}))
    os.replace(tmp, path)


@dataclass
class Backoff:
    """The delay before a restart: ``first`` seconds, doubled at each quick exit up to ``maximum``,
    back to ``first`` when the process had run ``stable_after`` seconds or more."""

    first: float = 1.0
    maximum: float = 30.0
    stable_after: float = 60.0
    _next: float | None = field(default=None, init=False, repr=False)

    def delay(self, ran_for: float) -> float:
        if self._next is None or ran_for >= self.stable_after:
            self._next = self.first
        delay = self._next
        self._next = min(delay * 2, self.maximum)
        return delay


def describe_exit(returncode: int) -> str:
    """``exit code 1``, ``killed by SIGKILL``; a shell's 128+N (its program killed by signal N) says so too."""
    if returncode < 0:
        return f"killed by {_signal_name(-returncode)}"
    if returncode > 128 and returncode - 128 < signal.NSIG:
        return f"exit code {returncode}: its program was killed by {_signal_name(returncode - 128)}"
    return f"exit code {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to a process group (nothing if it is gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group runs. A process whose parent died is reparented to PID 1,
    which in a container may never reap it: its zombie still belongs to the group and does not count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
    return False


@dataclass
class _Process:
    """One Procfile line: its current child (if running), its process group, its restarts."""

    name: str
    command: str
    colour: str
    backoff: Backoff
    popen: subprocess.Popen[bytes] | None = None
    pgid: int | None = None  # the group of the last child, kept after it exits for its leftovers
    started: float = 0.0
    exited: float = 0.0
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class _Pipe:
    """The output pipe of one child (read until every process holding it has closed it)."""

    name: str
    colour: str
    buffer: bytes = field(default=b"")


class Supervisor:
    """Runs ``commands`` (name → shell command) until a stop signal; see the module's docstring."""

    def __init__(
        self,
        commands: Mapping[str, str],
        *,
        env: Mapping[str, str],
        cwd: str | Path | None = None,
        restarts_file: Path | None = None,
        output: TextIO | None = None,
        backoff: Backoff | None = None,
        stop_grace: float = 10.0,
    ) -> None:
        template = backoff or Backoff()
        colours = get_colours()
        self.processes = [
            _Process(name, command, next(colours), dataclasses.replace(template)) for name, command in commands.items()
        ]
        self.env = dict(env)
        self.cwd = cwd
        self.restarts_file = restarts_file
        self.stop_grace = stop_grace
        self.printer = Printer(output or sys.stdout, width=max(len(n) for n in [SYSTEM, *commands]))
        self._selector = selectors.DefaultSelector()
        self._stop_signal: int | None = None
        self._kill_now = False

    # -- output ------------------------------------------------------------------------------

    def _print(self, name: str, colour: str | None, data: bytes | str) -> None:
        message = Message(type="line", data=data, time=datetime.datetime.now(), name=name, colour=colour)
        with contextlib.suppress(OSError):  # a closed terminal or pipe must not stop the supervision
            self.printer.write(message)

    def say(self, text: str) -> None:
        self._print(SYSTEM, None, text)

    def _read(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            pipe: _Pipe = key.data
            try:
                chunk = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                chunk = b""
            if not chunk:  # every writer closed it
                self._selector.unregister(key.fd)
                os.close(key.fd)
                if pipe.buffer:
                    self._print(pipe.name, pipe.colour, pipe.buffer)
                continue
            lines = (pipe.buffer + chunk).split(b"\n")
            pipe.buffer = lines.pop()
            if len(pipe.buffer) > _LINE_LIMIT:
                lines.append(pipe.buffer)
                pipe.buffer = b""
            if lines:
                self._print(pipe.name, pipe.colour, b"\n".join(lines))

    # -- processes ---------------------------------------------------------------------------

    def _start(self, proc: _Process) -> None:
        if proc.pgid is not None:  # what the last child left behind had its SIGTERM and a delay
            _signal_group(proc.pgid, signal.SIGKILL)
        read_end, write_end = os.pipe()
        try:
            proc.popen = subprocess.Popen(
                ["/bin/sh", "-c", proc.command],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            os.close(write_end)
        os.set_blocking(read_end, False)
        self._selector.register(read_end, selectors.EVENT_READ, _Pipe(proc.name, proc.colour))
        proc.pgid = proc.popen.pid
        proc.started = time.monotonic()
        proc.restart_at = None

    def _reap(self, proc: _Process, now: float) -> None:
        """``proc``'s child has exited: log it and, unless stopping, schedule the restart."""
        assert proc.popen is not None
        pid, how = proc.popen.pid, describe_exit(proc.popen.returncode)
        proc.popen, proc.exited = None, now
        if self._stop_signal is not None:
            self.say(f"{proc.name} stopped (pid {pid}, {how})")
            return
        delay = proc.backoff.delay(now - proc.started)
        left = _group_alive(pid)  # its program's own children, such as a worker's pool
        if left:
            _signal_group(pid, signal.SIGTERM)
        self.say(
            f"{proc.name} exited unexpectedly (pid {pid}, ran {now - proc.started:.1f} s, {how}); "
            f"{'SIGTERM to what is left of its process group; ' if left else ''}restarting in {delay:g} s"
        )
        proc.restart_at = now + delay

    def _restart(self, proc: _Process) -> None:
        self._start(proc)
        proc.restarts += 1
        self.say(f"{proc.name} restarted (pid {proc.popen.pid}, restart {proc.restarts})")
        self._write_counts()

    def _write_counts(self) -> None:
        if self.restarts_file is not None:
            try:
                write_restarts(self.restarts_file, {p.name: p.restarts for p in self.processes})
            except OSError as exc:
                self.say(f"restarts not written to {self.restarts_file}: {exc}")

    def _groups_left(self) -> list[_Process]:
        return [p for p in self.processes if p.popen is not None or (p.pgid and _group_alive(p.pgid))]

    # -- the loop ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
        else:
            self._kill_now = True

    def run(self) -> None:
        """Start every process, restart those that exit, and return once a stop signal stopped them all."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            try:
                self._write_counts()
                for proc in self.processes:
                    self._start(proc)
                    self.say(f"{proc.name} started (pid {proc.popen.pid})")
                self._supervise()
            finally:
                self._stop()  # after a stop signal, or an error of the supervisor's own
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.restarts_file is not None:
                self.restarts_file.unlink(missing_ok=True)
            for key in list(self._selector.get_map().values()):
                os.close(key.fd)
            self._selector.close()

    def _supervise(self) -> None:
        while self._stop_signal is None:
            self._read(0.1)
            now = time.monotonic()
            for proc in self.processes:
                if proc.popen is not None and proc.popen.poll() is not None:
                    self._reap(proc, now)
                if self._stop_signal is None and proc.restart_at is not None and now >= proc.restart_at:
                    # what the exited child left (gunicorn's workers, a worker's pool) may finish
                    # shutting down, and free its port, for up to the grace period
                    if now < proc.exited + self.stop_grace and _group_alive(proc.pgid):
                        continue
                    self._restart(proc)

    def _stop(self) -> None:
        if self._stop_signal is None:  # an error of the supervisor's own: no restart from now on
            self._stop_signal = signal.SIGTERM
            self.say("stopping every process")
        else:
            self.say(f"{_signal_name(self._stop_signal)} received: stopping every process")
        for proc in self._groups_left():
            self.say(f"sending SIGTERM to {proc.name} (process group {proc.pgid})")
            _signal_group(proc.pgid, signal.SIGTERM)
        deadline, killed = time.monotonic() + self.stop_grace, None
        while left := self._groups_left():
            if killed is None and (self._kill_now or time.monotonic() >= deadline):
                for proc in left:
                    self.say(f"sending SIGKILL to {proc.name} (process group {proc.pgid})")
                    _signal_group(proc.pgid, signal.SIGKILL)
                killed = time.monotonic()
            elif killed is not None and time.monotonic() > killed + self.stop_grace:
                self.say(f"still there after SIGKILL, left running: {', '.join(p.name for p in left)}")
                break
            self._read(0.1)
            for proc in left:
                if proc.popen is not None and proc.popen.poll() is not None:
                    self._reap(proc, time.monotonic())
        self._read(0)  # what the last ones wrote on their way out
        if not left:
            self.say("every process has stopped")
