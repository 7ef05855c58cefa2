"""The tutor-rollups job and GET /api/v1/tutors/{id}/metrics, on sessions landed by the pipeline."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from etl_app.jobs.rollups import run_tutor_rollups

from tests.helpers.dead_letters import land
from tests.helpers.jobs import rows, run_job
from tests.helpers.payloads import feedback, session, student, tutor

DAY = date(1995, 5, 10)
NEXT = DAY + timedelta(days=1)


def at(day: date, clock: str, offset: str = "Z") -> str:
    return f"{day.isoformat()}T{clock}{offset}"


def plain(key: str, tutor_id: str, student_id: str, start: str, **over) -> dict:
    """A session that started on time, with nothing special unless ``over`` says so."""
    return session(key, tutor_id, student_id, **{"scheduled_start": start, "actual_start": start, **over})


@pytest.fixture(scope="module")
def tutors(engine):
    """Tutor A: on DAY, a1 at 00:00 (late 10 min, engagement 0.5, two feedbacks 5 and 4), a2 at
    23:59 (no-show, rescheduled by the tutor, engagement null), a3 at 01:30+02:00 = 23:30 UTC
    (technical issues, engagement 0.25, one feedback 2); on NEXT, a4 at 00:00 (no engagement, no
    feedback). Tutor B: b1 on DAY at 12:00 (engagement 0.9, one feedback 3)."""
    u = "r" + uuid.uuid4().hex[:8]
    a, b, s = f"{u}-A", f"{u}-B", f"{u}-S"
    land(engine, "tutors", [tutor(a), tutor(b)])
    land(engine, "students", [student(s)])
    land(
        engine,
        "sessions",
        [
            plain(f"{u}-a1", a, s, at(DAY, "00:00:00"), actual_start=at(DAY, "00:10:00"), engagement_score=0.5),
            session(f"{u}-a2", a, s, scheduled_start=at(DAY, "23:59:00"), actual_start=None, no_show=True,
                    tutor_initiated_reschedule=True),
            plain(f"{u}-a3", a, s, at(NEXT, "01:30:00", "+02:00"), technical_issues=True, engagement_score=0.25),
            plain(f"{u}-a4", a, s, at(NEXT, "00:00:00")),
            plain(f"{u}-b1", b, s, at(DAY, "12:00:00"), engagement_score=0.9),
        ],
    )  # fmt: skip
    land(
        engine,
        "feedback",
        [
            feedback(f"{u}-f1", f"{u}-a1", a, s, overall_rating=5),
            feedback(f"{u}-f2", f"{u}-a1", a, s, overall_rating=4),
            feedback(f"{u}-f3", f"{u}-a3", a, s, overall_rating=2),
            feedback(f"{u}-f4", f"{u}-b1", b, s, overall_rating=3),
        ],
    )
    return a, b, u


def stored_days(engine, tutor_id: str) -> list[dict]:
    return rows(engine, "SELECT * FROM tutor_daily_metrics WHERE tutor_id = :t ORDER BY day", t=tutor_id)


A_DAY = {
    "day": DAY,
    "sessions": 3,  # 00:00, 23:59, and 01:30+02:00 (23:30 UTC)
    "completed": 2,
    "no_shows": 1,
    "late_starts": 1,
    "tutor_reschedules": 1,
    "technical_issues": 1,
    "avg_engagement": 0.375,  # (0.5 + 0.25) / 2: the null one is left out
    "feedback_count": 3,
    "avg_rating": 3.6667,  # (5 + 4 + 2) / 3 feedback rows
}
A_NEXT = {
    "day": NEXT,
    "sessions": 1,
    "completed": 1,
    "no_shows": 0,
    "late_starts": 0,
    "tutor_reschedules": 0,
    "technical_issues": 0,
    "avg_engagement": None,
    "feedback_count": 0,
    "avg_rating": None,
}


def test_rollup_is_one_row_per_tutor_and_utc_day_with_every_field_computed_by_hand(engine, tutors):
    a, b, _ = tutors
    with engine.begin() as conn:  # computed from none: another test of the module may have run the job first
        conn.execute(sa.text("DELETE FROM tutor_daily_metrics WHERE tutor_id IN (:a, :b)"), {"a": a, "b": b})
    assert run_job(engine, run_tutor_rollups, DAY, NEXT) >= 3
    assert stored_days(engine, a) == [{"tutor_id": a, **A_DAY}, {"tutor_id": a, **A_NEXT}]
    assert stored_days(engine, b) == [
        {"tutor_id": b, "day": DAY, "sessions": 1, "completed": 1, "no_shows": 0, "late_starts": 0,
         "tutor_reschedules": 0, "technical_issues": 0, "avg_engagement": 0.9, "feedback_count": 1, "avg_rating": 3.0}
    ]  # fmt: skip


def test_recomputing_gives_the_same_rows_and_a_day_without_sessions_any_more_is_removed(engine, tutors):
    a, _, u = tutors
    run_job(engine, run_tutor_rollups, DAY, NEXT)
    before = rows(engine, "SELECT * FROM tutor_daily_metrics WHERE day BETWEEN :a AND :b ORDER BY 1, 2", a=DAY, b=NEXT)
    assert run_job(engine, run_tutor_rollups, DAY, NEXT) == 0
    again = rows(engine, "SELECT * FROM tutor_daily_metrics WHERE day BETWEEN :a AND :b ORDER BY 1, 2", a=DAY, b=NEXT)
    assert again == before

    moved = NEXT + timedelta(days=5)  # a4 rescheduled out of the window: NEXT has no session of A any more
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE sessions SET scheduled_start = scheduled_start + interval '5 days' WHERE session_id = :k"),
            {"k": f"{u}-a4"},
        )
    try:
        assert run_job(engine, run_tutor_rollups, DAY, NEXT) == 1
        assert stored_days(engine, a) == [{"tutor_id": a, **A_DAY}]
        run_job(engine, run_tutor_rollups, moved, moved)
        assert [d["day"] for d in stored_days(engine, a)] == [DAY, moved]
    finally:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE sessions SET scheduled_start = scheduled_start - interval '5 days' WHERE session_id = :k"
                ),
                {"k": f"{u}-a4"},
            )
        run_job(engine, run_tutor_rollups, DAY, moved)


def test_get_tutor_metrics_serves_the_days_with_sessions(client, auth, engine, tutors):
    a, _, _ = tutors
    run_job(engine, run_tutor_rollups, DAY, NEXT)
    r = client.get(
        f"/api/v1/tutors/{a}/metrics?from={DAY - timedelta(days=3)}&to={NEXT + timedelta(days=3)}", headers=auth
    )
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    as_json = [{**d, "day": d["day"].isoformat()} for d in (A_DAY, A_NEXT)]
    assert body == {
        "tutor_id": a,
        "from": (DAY - timedelta(days=3)).isoformat(),
        "to": (NEXT + timedelta(days=3)).isoformat(),
        "days": as_json,
    }
    r = client.get(f"/api/v1/tutors/{a}/metrics?from={NEXT}&to={NEXT}", headers=auth)
    assert r.get_json()["days"] == as_json[1:]


def test_get_tutor_metrics_of_a_stored_tutor_without_sessions_is_an_empty_list(client, auth, tutors):
    a, _, _ = tutors
    r = client.get(f"/api/v1/tutors/{a}/metrics?from=2000-01-01&to=2000-01-31", headers=auth)
    assert (r.status_code, r.get_json()["days"]) == (200, [])


def test_get_tutor_metrics_answers_404_for_an_unknown_tutor_and_400_for_a_bad_range(client, auth, tutors):
    a, _, _ = tutors
    r = client.get("/api/v1/tutors/no-such-tutor/metrics", headers=auth)
    assert (r.status_code, r.get_json()["error"]) == (404, "not_found")
    for query in ("from=1995-05-10&to=1996-05-10", "from=1995-05-11&to=1995-05-10", "from=yesterday"):
        r = client.get(f"/api/v1/tutors/{a}/metrics?{query}", headers=auth)
        assert (r.status_code, r.get_json()["error"]) == (400, "invalid_parameter"), query
