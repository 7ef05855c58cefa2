"""The app's Celery app with a poison planted in the students' derive step, for the fault tests.

Start a worker with ``-A tests.helpers.poison_app:celery`` and the repository on PYTHONPATH. A student whose
``student_id`` ends in ``POISON`` then fails in enrich every time, in the way
``ETL_TEST_POISON`` says:

- ``raise`` (default): derive raises, as a bug in an enrich function would;
- ``kill``: the pool child SIGKILLs itself, as a segfault or the OOM killer would.

Nothing else changes: every other record goes through the real pipeline.
"""

from __future__ import annotations

import os
import signal

from etl_app.record_types import get_registry
from wsgi import app, celery  # noqa: F401  (the -A target)

POISON_SUFFIX = "POISON"
_students = get_registry()["students"]
_derive = _students.derive


def _poisoned_derive(data, as_of, parents):
    if str(data.get("student_id", "")).endswith(POISON_SUFFIX):
        if os.environ.get("ETL_TEST_POISON", "raise") == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"poisoned record {data['student_id']}")
    return _derive(data, as_of, parents)


object.__setattr__(_students, "derive", _poisoned_derive)  # RecordType is a frozen dataclass
