"""The upload quick start of docs/uploads.md lands: run as written (fewer records), its generate
commands give every session its tutor and students, and the files are submitted parents first."""

from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from etl_app.cli import main as cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "uploads.md"
SMALLER = 400  # the doc says 100000; the same commands with fewer records


def _commands(prefix: str) -> list[list[str]]:
    block = re.search(r"## Uploading a file.*?```sh\n(.*?)```", DOC.read_text(), re.S).group(1)
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith(prefix)]


def test_the_quick_start_generates_the_sessions_parents_and_submits_them_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in _commands("etl-app generate"):
        args = [str(SMALLER) if a == "100000" else a for a in args]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    sessions = list(csv.DictReader(open("sessions.csv", newline="")))
    tutors = {r["tutor_id"] for r in csv.DictReader(open("tutors.csv", newline=""))}
    students = {r["student_id"] for r in csv.DictReader(open("students.csv", newline=""))}
    assert len(sessions) == SMALLER
    assert all(s["tutor_id"] in tutors and s["student_id"] in students for s in sessions)
    submitted = [args[args.index("--type") + 1] for args in _commands("etl-app submit")]
    assert submitted.index("sessions") > max(submitted.index("tutors"), submitted.index("students"))
