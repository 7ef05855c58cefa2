"""A first `make run` in a fresh clone, on the embedded servers, takes a record and stops cleanly.

As root the clone sits in a ``tempfile.mkdtemp()`` folder (mode 0700) that no other account can
enter, as a clone in root's home would: the embedded PostgreSQL must start there all the same.
The clone is of the repository's committed HEAD (``git clone``), so this checks what is
committed, not uncommitted edits. `make run` creates the clone's own .venv (pip, as configured
on the machine); that takes most of the test's time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psutil
import pytest
import requests

from tests.helpers.payloads import tutor
from tests.helpers.procs import assert_a_quiet_start, free_port, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only as root"),
]

REPO = Path(__file__).resolve().parents[2]
# What would point `make run` at other servers or ports, or at another virtualenv.
NOT_PASSED_ON = ("DATABASE_URL", "REDIS_URL", "HOST", "PORT", "WEB_PORT", "VIRTUAL_ENV", "PYTHONPATH")
NOT_PASSED_ON_PREFIXES = ("ETL_", "CELERY_", "FLOWER_", "WEB_", "MAKE", "MFLAGS")


def _processes_under(directory: Path) -> list[psutil.Process]:
    """Running processes (not zombies) whose working directory is ``directory`` or below it."""
    root = os.path.realpath(directory)
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            cwd = os.path.realpath(proc.cwd())
            if (cwd == root or cwd.startswith(root + os.sep)) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _describe(procs: list[psutil.Process]) -> str:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid} {proc.name()} (cwd {proc.cwd()})")
        except psutil.Error:
            out.append(str(proc.pid))
    return ", ".join(out)


@pytest.mark.timeout(900)
def test_make_run_in_a_private_clone_takes_a_record_and_stops_on_ctrl_c(tmp_path):
    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.skip("needs git and make")
    if not (REPO / ".git").exists():
        pytest.skip("the tests do not run from a git checkout")
    base = Path(tempfile.mkdtemp(prefix="etl-first-run-"))
    assert base.stat().st_mode & 0o777 == 0o700
    clone = base / "etl"
    log_path = tmp_path / "make-run.log"
    port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in NOT_PASSED_ON and not k.startswith(NOT_PASSED_ON_PREFIXES)}
    env.update(PORT=str(port), FLOWER_PORT=str(flower_port))
    make: subprocess.Popen[bytes] | None = None

    def log_tail() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-60:])

    try:
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
        with open(log_path, "wb") as log:
            make = subprocess.Popen(
                ["make", "run"],
                cwd=clone,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as in a terminal
            )
        api = f"http://127.0.0.1:{port}/api/v1"

        def api_key() -> str | None:
            if make.poll() is not None:
                raise AssertionError(f"make run exited with {make.returncode}:\n{log_tail()}")
            key = (clone / "var" / "api_key").read_text().strip() if (clone / "var" / "api_key").exists() else ""
            if not key:
                return None
            try:
                answer = requests.get(f"{api}/record-types", headers={"Authorization": f"Bearer {key}"}, timeout=5)
            except (requests.ConnectionError, requests.Timeout):
                return None
            return key if answer.status_code == 200 else None

        # Installing the clone's .venv comes first; then migrate and start every process.
        key = wait_until(api_key, 600, 1.0, what="the API of `make run` to answer")
        auth = {"Authorization": f"Bearer {key}"}
        printed = log_path.read_text(errors="replace")
        assert key not in printed and "var/api_key" in printed  # `etl-app run` says where the key is, not the key

        posted = requests.post(f"{api}/students", json={"student_id": "S1", "name": "Sam"}, headers=auth, timeout=10)
        assert posted.status_code == 202, posted.text

        def stored() -> dict | None:
            answer = requests.get(f"{api}/records/students/S1", headers=auth, timeout=10)
            return answer.json() if answer.status_code == 200 else None

        record = wait_until(stored, 60, 0.5, what="student S1 to be stored")
        assert record["fields"]["name"] == "Sam"
        # a tutor's enrich runs on the lookups worker, which `make run` starts too
        posted = requests.post(f"{api}/tutors", json=tutor("T1"), headers=auth, timeout=10)
        assert posted.status_code == 202, posted.text
        wait_until(
            lambda: requests.get(f"{api}/records/tutors/T1", headers=auth, timeout=10).ok, 60, 0.5, what="tutor T1"
        )

        # the pages: the printed address, signed in with the key of var/api_key
        pages = f"http://127.0.0.1:{port}/ui/"
        assert pages in log_path.read_text(errors="replace")
        browser = requests.Session()
        signin = browser.get(pages, timeout=10)
        assert signin.status_code == 200 and signin.url.endswith("/ui/signin?next=/ui/")
        token = re.search(r'name="csrf-token" content="([^"]+)"', signin.text).group(1)
        overview = browser.post(signin.url, data={"key": key, "csrf_token": token, "next": "/ui/"}, timeout=10)
        assert overview.status_code == 200 and overview.url == f"http://127.0.0.1:{port}/ui/overview", overview.url

        # Ctrl-C in the terminal: SIGINT to the whole foreground process group.
        os.killpg(make.pid, signal.SIGINT)
        try:
            make.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"make run did not exit after SIGINT:\n{log_tail()}") from None
        # Nothing is left running from the clone: not the app's processes, not the embedded
        # PostgreSQL or Redis (they run in sessions of their own, so the launcher stops them).
        try:
            wait_until(lambda: not _processes_under(clone), 30, 0.5, what="every process of the clone to exit")
        except AssertionError:
            pytest.fail(f"left running after make run exited: {_describe(_processes_under(clone))}\n{log_tail()}")
        # what a newcomer reads: installing says nothing of the pages' folders, and the start
        # is the banner, then the processes' lines without the warnings every start repeated
        printed = log_path.read_text(errors="replace")
        assert "etl_app.ui.static" not in printed and "is absent from the `packages`" not in printed, printed
        assert_a_quiet_start(printed)
    finally:
        if make is not None and make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(30)
        for proc in _processes_under(clone):  # the embedded servers run in sessions of their own
            try:
                proc.kill()
            except psutil.Error:
                pass
        shutil.rmtree(base, ignore_errors=True)
