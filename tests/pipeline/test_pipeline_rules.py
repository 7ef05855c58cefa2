"""The pipeline's rules about parents and time, tested where they are decided.

- parent_mismatch: ``enrich_chunk`` compares a child with its stored parent (``ParentRef.must_match``);
- missing_parent: ``give_up_on_waiting`` (what ``StageTask.wait_or_give_up`` applies) ends the wait
  exactly when ``ETL_PARENT_WAIT_SECONDS`` have passed;
- time-dependent derived fields are computed as of the record's ``received_at``, whenever enrich runs.

Records go into ``raw_records`` of the test database and come back through ``load_raw``,
``validate_chunk`` and ``fetch_parents``, as etl.validate and etl.enrich see them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from etl_app import clock, errors
from etl_app.dead_letters.store import Failure
from etl_app.pipeline import enrich
from etl_app.pipeline.enrich import Waiting, enrich_chunk, fetch_parents, give_up_on_waiting, next_try_in
from etl_app.pipeline.stash import item
from etl_app.pipeline.validate import load_raw, validate_chunk
from etl_app.record_types import get_registry

from tests.helpers.dead_letters import land, store
from tests.helpers.payloads import feedback, session, student, tutor


def validated(engine, record_type: str, raw_ids: list[int]):
    """etl.validate's step on stored raw records: ``(items, failures)``."""
    with engine.connect() as conn:
        return validate_chunk(get_registry()[record_type], load_raw(conn, raw_ids))


def enriched(engine, record_type: str, raw_ids: list[int]):
    """etl.validate's and etl.enrich's steps on stored raw records: ``(done, waiting, failures)``."""
    registry = get_registry()
    rt = registry[record_type]
    items, failures = validated(engine, record_type, raw_ids)
    assert failures == []
    with engine.connect() as conn:
        parents = fetch_parents(conn, rt, registry, items)
    return enrich_chunk(rt, items, parents)


# -- parent_mismatch ------------------------------------------------------------------------------


@pytest.fixture
def stored_session(engine, unique) -> dict[str, str]:
    """A persisted session of tutor ``<unique>-T`` and student ``<unique>-S``."""
    ids = {"session_id": f"{unique}-1", "tutor_id": f"{unique}-T", "student_id": f"{unique}-S"}
    land(engine, "tutors", [tutor(ids["tutor_id"])])
    land(engine, "students", [student(ids["student_id"])])
    land(engine, "sessions", [session(ids["session_id"], ids["tutor_id"], ids["student_id"])])
    return ids


def test_feedback_matching_its_session_is_enriched(engine, unique, stored_session):
    accepted = store(engine, "feedback", [feedback(f"{unique}-F", **stored_session)])
    done, waiting, failures = enriched(engine, "feedback", accepted.ids)
    assert (waiting, failures) == ([], [])
    assert [one["id"] for one in done] == accepted.ids
    # The session ends 2026-11-22T05:30Z (23:30-05:00 + 60 min); submitted at 06:00Z.
    assert done[0]["data"]["feedback_delay_hours"] == 0.5


def test_enrich_reads_only_the_parent_columns_its_refs_name(engine, unique, stored_session):
    """A session's parents are read by their key alone (its derive reads none of their columns), a
    feedback's session by its key, the fields it must match and what its derive reads; derived
    values are those of the whole rows."""
    registry = get_registry()
    sessions, feedback_type = registry["sessions"], registry["feedback"]
    items = [
        item(
            1,
            "i",
            clock.utcnow(),
            None,
            {"tutor_id": stored_session["tutor_id"], "student_id": stored_session["student_id"]},
        )
    ]
    with engine.connect() as conn:
        rows = fetch_parents(conn, sessions, registry, items)
        assert {key: dict(row) for key, row in rows.items()} == {
            ("tutors", stored_session["tutor_id"]): {"tutor_id": stored_session["tutor_id"]},
            ("students", stored_session["student_id"]): {"student_id": stored_session["student_id"]},
        }
        items = [item(2, "i", clock.utcnow(), None, {"session_id": stored_session["session_id"]})]
        (row,) = fetch_parents(conn, feedback_type, registry, items).values()
    assert set(row) == {"session_id", "tutor_id", "student_id", "scheduled_start", "duration_minutes"}


def test_every_built_in_parent_ref_names_columns_of_its_parent():
    registry = get_registry()
    for record_type in (registry[name] for name in ("tutors", "students", "sessions", "feedback")):
        for ref in record_type.parents:
            parent = registry[ref.record_type]
            columns = enrich.parent_columns(ref, parent)
            assert columns is not None, f"{record_type.name}: {ref.record_type} read whole"
            assert set(columns) <= set(parent.table.c.keys()), (record_type.name, ref)


@pytest.mark.parametrize("field", ["student_id", "tutor_id"])
def test_feedback_disagreeing_with_its_session_is_a_parent_mismatch(engine, unique, stored_session, field):
    payload = feedback(f"{unique}-F", **{**stored_session, field: f"{unique}-other"})
    accepted = store(engine, "feedback", [payload])
    done, waiting, failures = enriched(engine, "feedback", accepted.ids)
    assert (done, waiting) == ([], [])
    assert failures == [
        Failure(
            accepted.ids[0],
            errors.PARENT_MISMATCH,
            f"session_id '{unique}-1': {field}='{unique}-other' but sessions.{field}={stored_session[field]!r}",
        )
    ]


# -- missing_parent at the end of the wait -------------------------------------------------------

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
BUDGET = 900  # ETL_PARENT_WAIT_SECONDS' default


def child(raw_id: int, waited: timedelta | None) -> Waiting:
    """A session waiting for tutor T-1 since ``waited`` before NOW (None: its first wait)."""
    since = None if waited is None else NOW - waited
    return Waiting(item(raw_id, "ingestion", NOW - timedelta(hours=1), since, {}), "tutors:T-1")


@pytest.mark.unit
def test_a_child_is_dead_lettered_as_missing_parent_exactly_when_its_wait_reaches_the_budget():
    children = [
        child(1, None),
        child(2, timedelta(seconds=BUDGET) - timedelta(microseconds=1)),
        child(3, timedelta(seconds=BUDGET)),
        child(4, timedelta(seconds=BUDGET, microseconds=1)),
    ]
    retry, failures = give_up_on_waiting(children, NOW, BUDGET)
    assert [w.item["id"] for w in retry] == [1, 2]
    assert failures == [
        Failure(i, errors.MISSING_PARENT, "parent tutors:T-1 not found after waiting 900s", waiting_on="tutors:T-1")
        for i in (3, 4)
    ]


@pytest.mark.unit
def test_the_try_that_dead_letters_a_waiting_child_is_due_when_its_wait_ends_not_a_backoff_later():
    # A backoff of 300 s (ETL_RETRY_BACKOFF_MAX_SECONDS) no longer carries a child past its wait.
    assert next_try_in([child(1, timedelta(seconds=800))], NOW, BUDGET, backoff=300) == 100
    # The first of the chunk to come of age decides; a child that has not waited has it all ahead.
    chunk = [child(1, None), child(2, timedelta(seconds=890)), child(3, timedelta(seconds=10))]
    assert next_try_in(chunk, NOW, BUDGET, backoff=300) == 10
    assert next_try_in([child(1, None)], NOW, 3, backoff=60) == 3
    # Early in the wait the backoff stands; past the end of it, at once.
    assert next_try_in([child(1, timedelta(seconds=10))], NOW, BUDGET, backoff=4) == 4
    assert next_try_in([child(1, timedelta(seconds=BUDGET + 5))], NOW, BUDGET, backoff=4) == 0


# -- derived fields as of received_at -------------------------------------------------------------

# 2025-03-01T23:30-05:00: the as-of date is the UTC date, 2025-03-02.
RECEIVED = datetime(2025, 3, 2, 4, 30, tzinfo=UTC)


def test_tutors_time_dependent_fields_are_as_of_received_at_whenever_enrich_runs(engine, unique, monkeypatch):
    accepted = store(
        engine,
        "tutors",
        [
            tutor(f"{unique}-a", onboarding_date="2025-02-01"),  # updated_at defaults to received_at
            tutor(f"{unique}-b", onboarding_date="2024-12-02", updated_at="2025-03-01T23:59:59Z"),
            tutor(f"{unique}-c", onboarding_date="2024-03-02", updated_at="2025-03-01T23:30:00-05:00"),
        ],
        received_at=RECEIVED,
    )

    def enrich_at(moment: datetime):
        monkeypatch.setattr(clock, "utcnow", lambda: moment)
        monkeypatch.setattr(enrich, "utcnow", lambda: moment)
        done, waiting, failures = enriched(engine, "tutors", accepted.ids)
        assert (waiting, failures) == ([], [])
        assert {one["enriched_at"] for one in done} == {moment}
        return [one["data"] for one in done]

    soon = enrich_at(RECEIVED + timedelta(minutes=1))
    derived = ("tenure_days", "is_new_tutor", "experience_level", "is_active_today")
    assert [tuple(data[name] for name in derived) for data in soon] == [
        (29, True, "junior", True),
        (90, False, "mid", False),
        (365, False, "senior", True),
    ]
    assert soon[0]["updated_at"] == RECEIVED
    assert enrich_at(RECEIVED + timedelta(days=40)) == soon  # a replay weeks later


def test_onboarding_date_is_checked_against_received_at_not_today(engine, unique):
    accepted = store(
        engine,
        "tutors",
        [tutor(f"{unique}-a", onboarding_date="2025-03-02"), tutor(f"{unique}-b", onboarding_date="2025-03-03")],
        received_at=RECEIVED,
    )
    items, failures = validated(engine, "tutors", accepted.ids)
    assert [(one["id"], one["data"]["onboarding_date"]) for one in items] == [(accepted.ids[0], date(2025, 3, 2))]
    assert failures == [
        Failure(
            accepted.ids[1],
            errors.VALIDATION,
            "onboarding_date: Must not be after the date the record was received.",
        )
    ]
