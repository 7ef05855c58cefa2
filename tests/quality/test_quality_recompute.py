"""The quality-recompute job: stored quality of an older definition (overall over every optional
field) rewritten with today's (overall over the expected fields), for ingestions and daily rows;
a second run writes nothing and leaves the same rows."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
import pytest
import sqlalchemy as sa

from etl_app.jobs.registry import get_job
from etl_app.quality import settle
from etl_app.quality.daily import run_daily_quality
from etl_app.quality.recompute import rederived, run_quality_recompute
from etl_app.record_types import get_registry

from tests.helpers.dead_letters import store
from tests.helpers.jobs import rows, run_job

DAY = date(1993, 5, 14)  # no other test stores anything on it
RECEIVED_AT = datetime(1993, 5, 14, 9, 30, tzinfo=UTC)

# Two students, grade_level given once, enrolled_on never, name twice. Today's definition:
# overall = (grade_level 0.5 + enrolled_on 0) / 2 = 0.25, score = (1 + 0.25 + 1 + 1) / 4 = 0.8125 (fair).
# The older one averaged name too: overall = (1 + 0.5 + 0) / 3 = 0.5, score 0.875 (good).
OLD_OVERALL, OLD_SCORE, OLD_LEVEL = 0.5, 0.875, "good"
NEW_OVERALL, NEW_SCORE, NEW_LEVEL = 0.25, 0.8125, "fair"


def _stored_quality(engine, ingestion_id) -> dict:
    with engine.connect() as conn:
        return conn.scalar(sa.text("SELECT quality FROM ingestions WHERE id = :i"), {"i": ingestion_id})


def _as_of_old(quality: dict) -> dict:
    """``quality`` as the former definition stored it."""
    return {
        **quality,
        "completeness": {**quality["completeness"], "overall": OLD_OVERALL},
        "score": OLD_SCORE,
        "level": OLD_LEVEL,
    }


@pytest.fixture
def old_style(engine, unique):
    """One settled ingestion of students and its day's daily row, both stored as the former
    definition computed them; and a second ingestion whose payloads the retention job dropped."""
    first = [
        {"student_id": f"{unique}-1", "name": "Ann", "grade_level": 4},
        {"student_id": f"{unique}-2", "name": "Bob"},
    ]
    second = [
        {"student_id": f"{unique}-3", "name": "Cy", "grade_level": 7},
        {"student_id": f"{unique}-4", "name": "Di"},
    ]
    kept = store(engine, "students", first, received_at=RECEIVED_AT)
    dropped = store(engine, "students", second, received_at=RECEIVED_AT)
    ids = kept.ids + dropped.ids
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM daily_quality WHERE day = :d"), {"d": DAY})
        conn.execute(sa.text("UPDATE raw_records SET status = 'persisted' WHERE id = ANY(:ids)"), {"ids": ids})
    settle.settle(engine, [kept.ingestion_id, dropped.ingestion_id])
    run_job(engine, run_daily_quality, DAY, DAY)
    with engine.begin() as conn:
        for ident in (kept.ingestion_id, dropped.ingestion_id):
            old = orjson.dumps(_as_of_old(_stored_quality(engine, ident))).decode()
            conn.execute(
                sa.text("UPDATE ingestions SET quality = CAST(:q AS jsonb) WHERE id = :i"), {"q": old, "i": ident}
            )
        conn.execute(
            sa.text("UPDATE raw_records SET payload = NULL, payload_dropped_at = now() WHERE id = ANY(:ids)"),
            {"ids": dropped.ids},
        )
        conn.execute(
            sa.text(
                "UPDATE daily_quality SET score = :s, level = :l, "
                "completeness = completeness || jsonb_build_object('overall', CAST(:o AS float8)) "
                "WHERE record_type = 'students' AND day = :d"
            ),
            {"s": OLD_SCORE, "l": OLD_LEVEL, "o": OLD_OVERALL, "d": DAY},
        )
    return kept.ingestion_id, dropped.ingestion_id


def test_the_job_rewrites_old_stored_quality_and_a_second_run_changes_nothing(engine, old_style):
    kept, dropped = old_style
    assert _stored_quality(engine, kept)["score"] == OLD_SCORE

    touched = run_job(engine, run_quality_recompute, DAY, DAY)
    assert touched == 3  # two ingestions, one day

    measured = _stored_quality(engine, kept)
    assert measured["completeness"]["overall"] == NEW_OVERALL
    assert (measured["score"], measured["level"]) == (NEW_SCORE, NEW_LEVEL)
    # its payloads gone, the other is read again from its stored shares: the same numbers here
    from_shares = _stored_quality(engine, dropped)
    assert from_shares["completeness"] == measured["completeness"]
    assert (from_shares["score"], from_shares["level"]) == (NEW_SCORE, NEW_LEVEL)
    (day,) = rows(engine, "SELECT * FROM daily_quality WHERE record_type = 'students' AND day = :d", d=DAY)
    # the day's 4 students, 2 of whose payloads are gone: kept as measured, read again from its shares
    assert day["completeness"]["overall"] == NEW_OVERALL
    assert (day["score"], day["level"]) == (NEW_SCORE, NEW_LEVEL)

    before = (_stored_quality(engine, kept), _stored_quality(engine, dropped), day)
    assert run_job(engine, run_quality_recompute, DAY, DAY) == 0
    (again,) = rows(engine, "SELECT * FROM daily_quality WHERE record_type = 'students' AND day = :d", d=DAY)
    assert (_stored_quality(engine, kept), _stored_quality(engine, dropped), again) == before


def test_an_ingestion_outside_the_window_is_left_alone(engine, old_style):
    kept, _ = old_style
    run_job(engine, run_quality_recompute, date(1993, 5, 15), date(1993, 5, 16))
    assert _stored_quality(engine, kept)["score"] == OLD_SCORE


def test_reading_again_from_stored_shares_keeps_what_is_within_rounding():
    students = get_registry()["students"]
    fresh = {
        "accepted": 3,
        "validity": 1.0,
        "uniqueness": 1.0,
        "integrity": 1.0,
        # shares 1/3 and 2/3: a fresh overall is 0.5, from the rounded shares 0.49995 -> 0.5 too
        "completeness": {"student_id": 1.0, "name": 0.0, "grade_level": 0.3333, "enrolled_on": 0.6667, "overall": 0.5},
        "score": 0.875,
        "level": "good",
    }
    assert rederived(students, fresh) is fresh
    old = {**fresh, "completeness": {**fresh["completeness"], "overall": 0.3333}, "score": 0.8333, "level": "fair"}
    assert rederived(students, old) == fresh
    nothing = {"accepted": 0, "validity": 0.0, "completeness": None, "score": None, "level": "unusable"}
    assert rederived(students, nothing) is nothing


def test_the_job_is_registered_to_run_by_hand_over_every_day():
    job = get_job("quality-recompute")
    assert (job.scheduled, job.schedule, job.schedule_variable) == (False, "by hand", None)
    assert job.takes_window and job.task_name == "etl.beat.quality-recompute"
