"""``python -m tests.helpers.supervise PROCFILE RESTARTS_FILE FIRST MAXIMUM STABLE_AFTER GRACE NAME...``:
:class:`etl_app.local.supervisor.Supervisor` over the Procfile's ``NAME`` lines, as `etl-app run`
runs it but with the backoff and the grace period given (seconds), and no database around it."""

from __future__ import annotations

import sys
from pathlib import Path

from etl_app.local.supervisor import Backoff, Supervisor, procfile_commands


def main(argv: list[str]) -> None:
    procfile, restarts_file, first, maximum, stable_after, grace, *names = argv
    Supervisor(
        procfile_commands(Path(procfile), names),
        env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
        restarts_file=Path(restarts_file),
        backoff=Backoff(float(first), float(maximum), float(stable_after)),
        stop_grace=float(grace),
    ).run()


if __name__ == "__main__":
    main(sys.argv[1:])
