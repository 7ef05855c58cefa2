"""The stated wait is the real wait: a child whose parent never comes is dead-lettered when
``ETL_PARENT_WAIT_SECONDS`` have passed since it first waited, not a backoff later.

The backoff here (``ETL_RETRY_BACKOFF_SECONDS`` 60, capped at 120: a first retry 30 to 60 s
away) is far longer than the wait (3 s), as the 300 s cap is beside the default 900 s wait: the
try that dead-letters the child must still come when the wait ends. Both moments are read from the database
(``raw_records.waiting_since`` and the dead letter's ``first_failed_at``, one clock)."""

from __future__ import annotations

import pytest

from tests.helpers.payloads import session
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.slow

WAIT = 3
STACK_ENV = {
    "ETL_PARENT_WAIT_SECONDS": str(WAIT),
    "ETL_RETRY_BACKOFF_SECONDS": "60",
    "ETL_RETRY_BACKOFF_MAX_SECONDS": "120",
}
# The bound docs/pipeline.md states: the last try is due when the wait ends (at least 1 s away,
# the floor of any countdown); what comes on top is that try's chain (validate, enrich) and the
# dead-letter consumer's write, each a queue hop on a worker that may be busy with other tests'
# processes on a 2-core machine. 10 s is generous for that and still far below the 30 s the
# backoff alone would have added.
TOLERANCE = 10


def test_a_child_whose_parent_never_comes_is_dead_lettered_when_its_stated_wait_ends(api, unique, sql):
    key = f"{unique}-S"
    api.submit("sessions", session(key, f"{unique}-NOBODY", f"{unique}-ST"))

    def dead_letter():
        rows = sql(
            "SELECT d.error, EXTRACT(EPOCH FROM d.first_failed_at - r.waiting_since) AS waited "
            "FROM dead_letters d JOIN raw_records r ON r.id = d.raw_record_id WHERE d.natural_key = :k",
            k=key,
        )
        return rows[0] if rows else None

    found = wait_until(dead_letter, WAIT + TOLERANCE + 20, what="the missing_parent dead letter")
    assert f"not found after waiting {WAIT}s" in found.error
    assert WAIT <= float(found.waited) <= WAIT + TOLERANCE, float(found.waited)
