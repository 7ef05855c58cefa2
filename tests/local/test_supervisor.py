"""The supervisor of `etl-app run` on real processes: a process that exits is started again after
a backoff while the others keep running, its restarts are counted, and a stop signal leaves
nothing behind."""

from __future__ import annotations

import os
import re
import signal
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from etl_app.local.processes import LoggedProcess
from etl_app.local.supervisor import Backoff, describe_exit, read_restarts, write_restarts

from tests.helpers.procs import ROOT, wait_until

# One Procfile process: notes its pid and start time in <name>.starts, then per mode sleeps, exits
# at once (die), sleeps deaf to SIGTERM (stubborn) or starts a child of its own first (spawn).
CHILD = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    from pathlib import Path

    name, mode, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    with open(out / f"{name}.starts", "a") as f:
        f.write(f"{os.getpid()} {time.time()}\\n")
    print(f"{name} is up", flush=True)
    if mode == "die":
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "spawn":
        kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        (out / f"{name}.kid").write_text(str(kid.pid))
    time.sleep(600)
    """
)


class Supervised:
    """A supervisor (tests/helpers/supervise.py) over a Procfile of CHILD processes in ``tmp_path``."""

    def __init__(self, tmp_path: Path, modes: dict[str, str], *, first=0.2, maximum=1.6, stable_after=60, grace=2):
        self.dir = tmp_path
        (tmp_path / "child.py").write_text(CHILD)
        procfile = tmp_path / "Procfile"
        procfile.write_text(
            "".join(
                f"{name}: {sys.executable} {tmp_path / 'child.py'} {name} {mode} {tmp_path}\n"
                for name, mode in modes.items()
            )
        )
        self.restarts_file = tmp_path / "process_restarts.json"
        argv = [sys.executable, "-m", "tests.helpers.supervise", str(procfile), str(self.restarts_file)]
        argv += [str(first), str(maximum), str(stable_after), str(grace), *modes]
        self.proc = LoggedProcess("supervisor", argv, env={**os.environ}, cwd=ROOT, log_path=tmp_path / "out.log")

    def starts(self, name: str) -> list[tuple[int, float]]:
        path = self.dir / f"{name}.starts"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(int(pid), float(at)) for pid, at in (line.split() for line in lines)]

    def wait_starts(self, name: str, n: int, timeout: float = 30) -> list[tuple[int, float]]:
        wait_until(lambda: len(self.starts(name)) >= n, timeout, what=f"{name} started {n} times:\n{self.log()}")
        return self.starts(name)

    def log(self) -> str:
        return self.proc.log()

    def stop(self) -> None:
        self.proc.stop(30, terminate_group=True)


@pytest.fixture
def supervised(tmp_path):
    started: list[Supervised] = []

    def start(modes: dict[str, str], **kwargs) -> Supervised:
        s = Supervised(tmp_path, modes, **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_killed_process_is_started_again_and_the_others_keep_running(supervised):
    s = supervised({"web": "sleep", "worker": "sleep"})
    [(worker_pid, _)] = s.wait_starts("worker", 1)
    [(web_pid, _)] = s.wait_starts("web", 1)
    assert read_restarts(s.restarts_file) == {"web": 0, "worker": 0}

    os.kill(worker_pid, signal.SIGKILL)  # the program, as the OOM killer would, not its shell
    starts = s.wait_starts("worker", 2)
    assert starts[1][0] != worker_pid and not psutil.Process(starts[1][0]).status() == psutil.STATUS_ZOMBIE
    wait_until(lambda: read_restarts(s.restarts_file) == {"web": 0, "worker": 1}, 10, what="the restart counted")
    assert s.starts("web") == [(web_pid, s.starts("web")[0][1])] and not gone(web_pid)  # web never stopped
    log = s.log()
    assert re.search(
        r"system\s*\| worker exited unexpectedly "
        r"\(pid \d+, ran [\d.]+ s, exit code 137: its program was killed by SIGKILL\); restarting in 0.2 s",
        log,
    ), log
    assert re.search(r"system\s*\| worker restarted \(pid \d+, restart 1\)", log), log
    assert "web exited" not in log
    assert re.search(r"worker\s*\| worker is up", log)  # the program's own output, prefixed by its name


def test_a_process_that_keeps_exiting_is_restarted_later_and_later(supervised):
    s = supervised({"web": "sleep", "flaky": "die"}, first=0.2, maximum=0.8)
    starts = s.wait_starts("flaky", 5)
    delays = [
        float(d)
        for d in re.findall(
            r"flaky exited unexpectedly \(pid \d+, ran [\d.]+ s, exit code 3\); restarting in ([\d.]+) s", s.log()
        )
    ]
    assert delays[:4] == [0.2, 0.4, 0.8, 0.8]  # doubling, up to the maximum
    for (_, before), (_, after), delay in zip(starts, starts[1:5], delays, strict=False):
        assert after - before >= delay  # never started again before its delay
    assert len(s.starts("web")) == 1
    wait_until(lambda: (read_restarts(s.restarts_file) or {}).get("flaky", 0) >= 4, 10, what="the restarts counted")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_stops_every_process_and_leaves_nothing_behind(supervised, sig):
    s = supervised({"web": "spawn", "beat": "stubborn", "flaky": "die"}, first=30, grace=1)
    [(web_pid, _)] = s.wait_starts("web", 1)
    [(beat_pid, _)] = s.wait_starts("beat", 1)
    s.wait_starts("flaky", 1)
    wait_until(lambda: (s.dir / "web.kid").exists(), 10, what="web's own child")
    kid = int((s.dir / "web.kid").read_text())
    wait_until(lambda: "restarting in 30 s" in s.log(), 10, what="flaky waiting for its restart")

    os.kill(s.proc.pid, sig)
    s.proc.popen.wait(timeout=30)
    assert s.proc.popen.returncode == 0, s.log()
    for pid in (web_pid, kid, beat_pid):
        assert gone(pid), f"{pid} left running:\n{s.log()}"
    log = s.log()
    assert f"{signal.Signals(sig).name} received: stopping every process" in log
    assert re.search(r"sending SIGKILL to beat", log), log  # it ignored SIGTERM for the grace period
    assert "flaky restarted" not in log and "web exited unexpectedly" not in log
    assert "left running" not in log
    assert not s.restarts_file.exists()  # no stale counts for the next web to export


@pytest.mark.unit
def test_the_backoff_doubles_up_to_its_maximum_and_starts_over_after_a_stable_run():
    backoff = Backoff(first=1, maximum=30, stable_after=60)
    assert [backoff.delay(ran_for=2) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(ran_for=60) == 1
    assert backoff.delay(ran_for=0.5) == 2


@pytest.mark.unit
def test_an_exit_is_described_by_its_code_or_signal():
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(128 + signal.SIGTERM) == "exit code 143: its program was killed by SIGTERM"


def test_restart_counts_of_a_supervisor_that_is_gone_are_not_read(tmp_path):
    path = tmp_path / "process_restarts.json"
    write_restarts(path, {"worker": 2})
    assert read_restarts(path) == {"worker": 2}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left beside it
    dead = psutil.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(path.read_text().replace(str(os.getpid()), str(dead.pid)))
    assert read_restarts(path) is None
    path.write_text("{not json")
    assert read_restarts(path) is None
