"""Valid example records, to be varied by each test."""

from __future__ import annotations

from typing import Any


def tutor(tutor_id: str, **over: Any) -> dict[str, Any]:
    return {
        "tutor_id": tutor_id,
        "name": "Ada Tutor",
        "email": "ada@example.org",
        "subjects": ["Math", "math", "Physics"],
        "onboarding_date": "2026-01-01",
        "status": "active",
        **over,
    }


def student(student_id: str, **over: Any) -> dict[str, Any]:
    return {"student_id": student_id, "name": "Sam Student", "grade_level": 9, **over}


def session(session_id: str, tutor_id: str, student_id: str, **over: Any) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "tutor_id": tutor_id,
        "student_id": student_id,
        "session_number": 1,
        "scheduled_start": "2026-11-21T23:30:00-05:00",
        "actual_start": "2026-11-21T23:36:30-05:00",
        "duration_minutes": 60,
        "subject": "Math",
        "session_type": "regular",
        **over,
    }


def feedback(feedback_id: str, session_id: str, tutor_id: str, student_id: str, **over: Any) -> dict[str, Any]:
    return {
        "feedback_id": feedback_id,
        "session_id": session_id,
        "tutor_id": tutor_id,
        "student_id": student_id,
        "overall_rating": 4,
        "communication_rating": 5,
        "patience_rating": 3,
        "free_text_feedback": "  Clear and patient. ",
        "submitted_at": "2026-11-22T06:00:00Z",
        **over,
    }
