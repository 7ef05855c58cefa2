"""scripts/ensure-browser.sh, which ``make test`` runs before the suite: nothing to do when the
browser is there; apt-get as root or through ``sudo -n`` when it is missing; otherwise a failure
that says how to install it. ``id``, ``apt-get`` and ``sudo`` are stand-ins on PATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-browser.sh"


def _tool(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path):
    """A PATH of stand-ins (``id``, ``apt-get``; ``sudo`` when asked) in front of the system's
    shell tools; ``apt-get install`` creates the browser. Returns (run, calls log, browser path)."""
    bin_dir, calls, browser = tmp_path / "bin", tmp_path / "calls", tmp_path / "chromium"
    bin_dir.mkdir()
    installs = f"touch {browser}; chmod +x {browser}"

    def run(uid: int = 0, sudo: bool | None = None, apt_fails: bool = False) -> subprocess.CompletedProcess:
        fails = "echo 'E: Unable to locate package chromium' >&2; exit 100" if apt_fails else installs
        _tool(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}\ncase "$*" in *install*) {fails};; esac')
        _tool(bin_dir, "id", f"echo {uid}")
        if sudo is not None:
            runs = '[ "$1" = -n ] && shift\nexec "$@"' if sudo else "exit 1"  # a sudo that would ask a password
            _tool(bin_dir, "sudo", f'echo "sudo $*" >> {calls}\n{runs}')
        env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "ETL_TEST_CHROMIUM": str(browser)}
        return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False)

    return run, calls, browser


def _calls(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


def test_present_does_nothing(machine):
    run, calls, browser = machine
    browser.touch()
    browser.chmod(0o755)
    done = run(uid=1000)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    assert _calls(calls) == []


def test_missing_as_root_installs_with_apt_get(machine):
    run, calls, browser = machine
    done = run(uid=0)
    assert done.returncode == 0, done.stderr
    assert _calls(calls) == ["apt-get update -q", "apt-get install -y -q chromium"]
    assert "installing chromium" in done.stdout and browser.exists()
    again = run(uid=0)  # idempotent: the second run finds it
    assert again.returncode == 0 and again.stdout == "" and len(_calls(calls)) == 2


def test_missing_not_root_uses_sudo(machine):
    run, calls, browser = machine
    done = run(uid=1000, sudo=True)
    assert done.returncode == 0, done.stderr
    assert "sudo -n apt-get update -q" in _calls(calls)
    assert any(c.startswith("sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install") for c in _calls(calls))
    assert browser.exists()


@pytest.mark.parametrize("sudo", [None, False], ids=["no sudo", "sudo asks a password"])
def test_missing_without_root_fails_with_the_instruction(machine, sudo):
    run, calls, browser = machine
    done = run(uid=1000, sudo=sudo)
    assert done.returncode != 0
    assert f"{browser} is missing" in done.stderr and "apt-get install -y chromium" in done.stderr
    assert not any(c.startswith(("apt-get", "sudo -n apt-get", "sudo -n env")) for c in _calls(calls))


def test_a_failed_install_shows_apt_gets_output(machine):
    run, _, browser = machine
    done = run(uid=0, apt_fails=True)
    assert done.returncode != 0 and not browser.exists()
    assert "E: Unable to locate package chromium" in done.stderr and "could not install chromium" in done.stderr
