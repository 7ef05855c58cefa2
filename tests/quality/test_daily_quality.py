"""The daily-quality job and GET /api/v1/quality/{type}: every metric against hand-computed values."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from etl_app.ingest import outbox
from etl_app.quality.daily import run_daily_quality
from etl_app.record_types import get_registry

from tests.helpers.dead_letters import bury
from tests.helpers.jobs import rows, run_job

# Days no other test receives records on: each test here has its own.
DAY = date(1991, 4, 10)
NEXT = DAY + timedelta(days=1)
AFTER = DAY + timedelta(days=2)


def at(day: date, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


def stamp(day: date, clock: str, offset: str = "Z") -> str:
    return f"{day.isoformat()}T{clock}{offset}"


def sess(key: str, start: str, **over) -> dict:
    """A session with the 8 required fields only, plus ``over``."""
    return {
        "session_id": key,
        "tutor_id": "T",
        "student_id": "S",
        "session_number": 1,
        "scheduled_start": start,
        "duration_minutes": 60,
        "subject": "Math",
        "session_type": "regular",
        **over,
    }


def stored(engine, record_type: str, payloads: list[dict], received_at: datetime, rejections=()) -> list[int]:
    with engine.begin() as conn:
        result = outbox.store(
            conn,
            get_registry()[record_type],
            payloads,
            source="batch",
            received_at=received_at,
            rejections=list(rejections),
        )
    return result.ids


def quality(engine, day: date, record_type: str = "sessions") -> dict:
    (row,) = rows(engine, "SELECT * FROM daily_quality WHERE record_type = :t AND day = :d", t=record_type, d=day)
    return row


REQUIRED = ("session_id", "tutor_id", "student_id", "session_number", "scheduled_start", "duration_minutes",
            "subject", "session_type")  # fmt: skip

DURATION = "Must be between 5 and 480."
SESSION_TYPE = "Must be one of: regular, trial, makeup, group, exam_prep."
MISSING = "Missing data for required field."


@pytest.fixture(scope="module")
def day_of_sessions(engine):
    """Day DAY: one batch received at 10:00 UTC with 5 accepted sessions and 2 rejections; one
    accepted record is then dead-lettered missing_parent, one as validation. NEXT: one record
    received at 00:00:00 exactly. AFTER: only an upload row refused at parsing."""
    received = at(DAY, 10)
    ids = stored(
        engine,
        "sessions",
        [
            # lag 3600 s; optional: actual_start, engagement_score, no_show, technical_issues
            sess(
                "k1",
                stamp(DAY, "09:00:00"),
                actual_start=stamp(DAY, "09:02:00"),
                engagement_score=0.8,
                no_show=False,
                technical_issues=False,
            ),
            # the same key again; lag 7200 s; an all-space and a null optional field are absent;
            # optional: is_first_session, technical_issues
            sess(
                "k1",
                stamp(DAY, "08:00:00"),
                actual_start="   ",
                engagement_score=None,
                is_first_session=True,
                technical_issues=True,
            ),
            # event_time (naive: UTC) wins over scheduled_start: lag 60 s (not 7200 s);
            # optional: learning_objectives_met (false is a value), engagement_score (0.0 too), technical_issues
            sess(
                "k2",
                stamp(DAY, "10:00:00", "+02:00"),
                event_time=f"{DAY.isoformat()} 09:59",
                engagement_score=0.0,
                learning_objectives_met=False,
                technical_issues=False,
            ),
            # booked ahead: lag -7200 s; optional: late_start_minutes, tutor_initiated_reschedule
            sess("k3", stamp(DAY, "12:00:00"), late_start_minutes=0, tutor_initiated_reschedule=False),
            # lag 1800 s; optional: no_show
            sess("k4", stamp(DAY, "09:30:00"), no_show=False),
        ],
        received,
        rejections=[
            {"index": 5, "errors": {"duration_minutes": [DURATION]}},
            {"index": 6, "errors": {"duration_minutes": [DURATION], "subject": [MISSING]}},
        ],
    )
    bury(engine, [ids[3]], error_type="missing_parent", error="parent tutors:T is not stored", waiting_on="tutors:T")
    bury(engine, [ids[4]], error_type="validation", error=f"session_type: {SESSION_TYPE}; duration_minutes: {DURATION}")
    stored(engine, "sessions", [sess("k5", stamp(NEXT, "00:00:00"))], at(NEXT))
    (refused,) = stored(engine, "sessions", [sess("k6", stamp(AFTER, "00:00:00"))], at(AFTER, 23, 59, 59))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE raw_records SET status = 'rejected' WHERE id = :id"), {"id": refused})
    return ids


def test_daily_quality_of_a_day_is_every_metric_of_quality_md_computed_by_hand(engine, day_of_sessions):
    with engine.begin() as conn:  # computed from none: another test of the module may have run the job first
        conn.execute(sa.text("DELETE FROM daily_quality WHERE day BETWEEN :a AND :b"), {"a": DAY, "b": AFTER})
    assert run_job(engine, run_daily_quality, DAY, AFTER) >= 3
    row = quality(engine, DAY)
    shares = {name: 1.0 for name in REQUIRED}
    shares.update(
        is_first_session=0.2,  # 1 of 5
        actual_start=0.2,  # the all-space one is absent
        tutor_initiated_reschedule=0.2,
        no_show=0.4,
        late_start_minutes=0.2,
        engagement_score=0.4,  # the null one is absent, 0.0 is present
        learning_objectives_met=0.2,
        technical_issues=0.6,
        overall=0.2667,  # the expected fields: (actual_start 0.2 + engagement_score 0.4 + objectives 0.2) / 3
    )
    assert row == {
        "record_type": "sessions",
        "day": DAY,
        "received": 7,
        "accepted": 5,
        "rejected": 2,
        "validity": 0.7143,  # 5 / 7
        "completeness": shares,
        "uniqueness": 0.8,  # k1 twice: 4 keys / 5
        "integrity": 0.8,  # one missing_parent
        # lags -7200, 60, 1800, 3600, 7200: p95 interpolates 3600 + 0.8 x 3600
        "timeliness_p50": 1800.0,
        "timeliness_p95": 6480.0,
        "timeliness_max": 7200.0,
        "score": 0.6452,  # (5/7 + 0.8/3 + 0.8 + 0.8) / 4 = 0.64523...
        "level": "poor",
        "top_errors": [
            {"field": "duration_minutes", "message": DURATION, "count": 3},  # 2 rejections, 1 dead letter
            {"field": "session_type", "message": SESSION_TYPE, "count": 1},
            {"field": "subject", "message": MISSING, "count": 1},
        ],
    }


def test_a_record_received_at_midnight_counts_on_the_new_day_and_a_day_of_refusals_is_unusable(engine, day_of_sessions):
    run_job(engine, run_daily_quality, DAY, AFTER)
    next_day = quality(engine, NEXT)
    assert next_day["received"] == next_day["accepted"] == 1
    assert (next_day["validity"], next_day["uniqueness"], next_day["integrity"]) == (1.0, 1.0, 1.0)
    assert next_day["completeness"]["overall"] == 0.0
    assert (next_day["timeliness_p50"], next_day["timeliness_max"]) == (0.0, 0.0)
    assert (next_day["score"], next_day["level"]) == (0.75, "fair")  # (1 + 0 + 1 + 1) / 4

    refused = quality(engine, AFTER)
    assert (refused["received"], refused["accepted"], refused["rejected"]) == (1, 0, 1)
    assert refused["validity"] == 0.0
    nulls = ("completeness", "uniqueness", "integrity", "timeliness_p50", "timeliness_p95", "timeliness_max", "score")
    assert {name: refused[name] for name in nulls} == dict.fromkeys(nulls)
    assert refused["level"] == "unusable"


def test_recomputing_the_window_gives_the_same_rows_and_touches_none(engine, day_of_sessions):
    run_job(engine, run_daily_quality, DAY, AFTER)
    before = rows(engine, "SELECT * FROM daily_quality WHERE day BETWEEN :a AND :b ORDER BY 1, 2", a=DAY, b=AFTER)
    assert run_job(engine, run_daily_quality, DAY, AFTER) == 0
    after = rows(engine, "SELECT * FROM daily_quality WHERE day BETWEEN :a AND :b ORDER BY 1, 2", a=DAY, b=AFTER)
    assert after == before and len(after) == 3


def test_a_replay_that_lands_the_orphan_restores_integrity_on_the_next_run(engine):
    day = date(1991, 6, 1)
    ids = stored(
        engine, "sessions", [sess("o1", stamp(day, "09:00:00")), sess("o2", stamp(day, "09:00:00"))], at(day, 9)
    )
    bury(engine, [ids[0]], error_type="parent_mismatch", error="tutor_id differs from the session's")
    run_job(engine, run_daily_quality, day, day)
    assert quality(engine, day)["integrity"] == 0.5
    with engine.begin() as conn:  # replayed, then persisted
        conn.execute(sa.text("UPDATE raw_records SET status = 'persisted' WHERE id = :id"), {"id": ids[0]})
    assert run_job(engine, run_daily_quality, day, day) == 1
    assert quality(engine, day)["integrity"] == 1.0


def test_a_day_whose_payloads_were_dropped_keeps_its_row(engine):
    day = date(1991, 7, 1)
    ids = stored(engine, "students", [{"student_id": "p1"}, {"student_id": "p2", "name": "Sam"}], at(day, 9))
    run_job(engine, run_daily_quality, day, day)
    kept = quality(engine, day, "students")
    assert kept["completeness"]["name"] == 0.5
    with engine.begin() as conn:  # what the retention job does to settled records
        conn.execute(
            sa.text("UPDATE raw_records SET status = 'persisted', payload = NULL, payload_dropped_at = now() "
                    "WHERE id = :id"),
            {"id": ids[0]},
        )  # fmt: skip
    assert run_job(engine, run_daily_quality, day, day) == 0
    assert quality(engine, day, "students") == kept


def test_a_day_with_no_record_any_more_loses_its_row(engine):
    day = date(1991, 8, 1)
    ids = stored(engine, "students", [{"student_id": "gone"}], at(day, 9))
    run_job(engine, run_daily_quality, day, day)
    assert quality(engine, day, "students")["accepted"] == 1
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM raw_records WHERE id = :id"), {"id": ids[0]})
    assert run_job(engine, run_daily_quality, day, day) == 1
    assert rows(engine, "SELECT * FROM daily_quality WHERE day = :d", d=day) == []


# -- HTTP ------------------------------------------------------------------------------------------


def test_get_quality_serves_the_days_of_the_range(client, auth, engine, day_of_sessions):
    run_job(engine, run_daily_quality, DAY, AFTER)
    r = client.get(f"/api/v1/quality/sessions?from={DAY}&to={NEXT}", headers=auth)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["record_type"], body["from"], body["to"]) == ("sessions", DAY.isoformat(), NEXT.isoformat())
    assert [d["day"] for d in body["days"]] == [DAY.isoformat(), NEXT.isoformat()]
    first = body["days"][0]
    schema_order = [name for name in get_registry()["sessions"].loader.fields if name not in ("source", "event_time")]
    assert list(first["completeness"]) == [*schema_order, "overall"]  # the schema's order
    assert first["timeliness"] == {"p50": 1800.0, "p95": 6480.0, "max": 7200.0}
    assert {k: first[k] for k in ("received", "accepted", "rejected", "validity", "score", "level")} == {
        "received": 7, "accepted": 5, "rejected": 2, "validity": 0.7143, "score": 0.6452, "level": "poor",
    }  # fmt: skip
    assert first["top_errors"][0] == {"field": "duration_minutes", "message": DURATION, "count": 3}


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("from=1991-04-10&to=1992-04-10", 400, "invalid_parameter"),  # 367 days
        ("from=1991-04-10&to=1991-04-09", 400, "invalid_parameter"),
        ("from=10.04.1991", 400, "invalid_parameter"),
        ("to=1991-02-30", 400, "invalid_parameter"),
    ],
)
def test_get_quality_refuses_a_bad_range(client, auth, query, status, error):
    r = client.get(f"/api/v1/quality/sessions?{query}", headers=auth)
    assert (r.status_code, r.get_json()["error"]) == (status, error)
    assert r.get_json()["message"]


def test_get_quality_of_366_days_is_fine_and_an_unknown_type_is_404(client, auth):
    assert client.get("/api/v1/quality/tutors?from=1991-01-01&to=1991-12-31", headers=auth).status_code == 200
    assert client.get("/api/v1/quality/tutors?from=1992-01-01&to=1992-12-31", headers=auth).status_code == 200  # leap
    r = client.get("/api/v1/quality/nope", headers=auth)
    assert (r.status_code, r.get_json()["error"]) == (404, "unknown_record_type")
    assert client.get("/api/v1/quality/tutors").status_code == 401
