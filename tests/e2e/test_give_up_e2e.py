"""Giving up on records waiting for their parents, with a real worker whose wait loop keeps
retrying them (every 1 to 2 s; the wait itself is ten minutes here): a record given up is dead
for good, even when its parent lands a moment later, and when the give-up and the parent race,
each record ends exactly once, stored or dead-lettered, never both."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers.payloads import session, student, tutor
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.slow

STACK_ENV = {"ETL_PARENT_WAIT_SECONDS": "600"}


def waiting_count(api, ingestion_id: str) -> int:
    r = api.get(f"waiting?ingestion_id={ingestion_id}")
    assert r.status_code == 200, r.text
    return r.json()["total"]


def test_a_given_up_record_stays_dead_when_its_parent_lands_and_its_sibling_lands(api, unique, sql):
    t, st = f"{unique}-T", f"{unique}-ST"
    batch = [session(f"{unique}-S{i}", t, st, session_number=i + 1) for i in range(2)]
    ingestion_id = api.submit("sessions/batch", batch)["ingestion_id"]
    wait_until(lambda: waiting_count(api, ingestion_id) == 2, 60, what="both sessions to wait")

    r = api.post("waiting/give-up", {"record": {"type": "sessions", "key": f"{unique}-S0"}})
    assert r.status_code == 200 and r.json() == {"given_up": 1, "remaining": 0}

    api.submit("students", student(st))
    api.submit("tutors", tutor(t))
    # the sibling, waiting for the same tutor, lands: the tutor's persist woke every child then
    finished = api.wait_finished(ingestion_id, timeout=60)
    assert (finished["counts"]["persisted"], finished["counts"]["dead"]) == (1, 1)
    assert api.get(f"records/sessions/{unique}-S1").status_code == 200
    assert api.get(f"records/sessions/{unique}-S0").status_code == 404
    [dead] = sql("SELECT error_type, status, error FROM dead_letters WHERE natural_key = :k", k=f"{unique}-S0")
    assert (dead.error_type, dead.status) == ("missing_parent", "open") and "given up by" in dead.error


def test_when_a_give_up_and_the_parent_race_each_record_ends_once(api, unique, sql):
    t, st = f"{unique}-T", f"{unique}-ST"
    n = 40
    batch = [session(f"{unique}-S{i}", t, st, session_number=i + 1) for i in range(n)]
    ingestion_id = api.submit("sessions/batch", batch)["ingestion_id"]
    wait_until(lambda: waiting_count(api, ingestion_id) == n, 60, what="the sessions to wait")
    api.submit("students", student(st))

    with ThreadPoolExecutor(2) as pool:
        parent = pool.submit(api.submit, "tutors", tutor(t))
        given = pool.submit(api.post, "waiting/give-up", {"ingestion_id": ingestion_id})
        parent.result()
        answer = given.result()
    assert answer.status_code == 200, answer.text

    settled = api.wait_settled(ingestion_id, timeout=90)
    counts = settled["counts"]
    assert counts["persisted"] + counts["dead"] == n
    assert counts["dead"] == answer.json()["given_up"]  # every record given up, and only those, is dead
    stored = {row.session_id for row in sql("SELECT session_id FROM sessions WHERE ingestion_id = :i", i=ingestion_id)}
    open_dead = {
        row.natural_key
        for row in sql(
            "SELECT natural_key FROM dead_letters WHERE ingestion_id = :i AND status = 'open'", i=ingestion_id
        )
    }
    assert stored.isdisjoint(open_dead) and len(stored) + len(open_dead) == n
