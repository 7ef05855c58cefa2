"""What the synthetic data generator draws from: the reference date and time spans, names,
subjects, places and phrases, and the weighted distributions of the other fields (see
:mod:`etl_app.local.generate` for how the records use them)."""

from __future__ import annotations

import itertools
from bisect import bisect
from datetime import UTC, datetime
from random import Random
from typing import Any

REFERENCE = datetime(2026, 11, 1, tzinfo=UTC)
ONBOARDING_DAYS = 3 * 365
SESSION_DAYS = 26 * 7


class Weighted:
    """Weighted choice from fixed values, with one ``rng.random()`` per draw."""

    def __init__(self, pairs: dict[Any, float]) -> None:
        self.values = list(pairs)
        self.cum = list(itertools.accumulate(pairs.values()))
        self.total = self.cum[-1]

    def __call__(self, rng: Random) -> Any:
        return self.values[bisect(self.cum, rng.random() * self.total)]


SUBJECTS = {
    "stem": ["Mathematics", "Algebra", "Geometry", "Calculus", "Statistics", "Physics", "Chemistry", "Biology",
             "Computer Science", "Python Programming"],
    "humanities": ["History", "Geography", "Economics", "Psychology", "Philosophy", "English Literature",
                   "Essay Writing"],
    "languages": ["Spanish", "French", "German", "Mandarin", "Japanese", "English as a Second Language"],
    "test_prep": ["SAT Prep", "ACT Prep", "GRE Prep", "GMAT Prep", "AP Calculus", "IELTS Prep"],
    "arts": ["Music Theory", "Piano", "Guitar", "Art History", "Drawing"],
    "other": ["Study Skills", "Public Speaking", "Personal Finance"],
}  # fmt: skip
SUBJECT_TYPE = Weighted({"stem": 40, "humanities": 18, "languages": 16, "test_prep": 14, "arts": 7, "other": 5})
ALL_SUBJECTS = [s for group in SUBJECTS.values() for s in group]
FIRST_NAMES = (
    "Ada Alan Amara Ana Ben Carlos Chen Chloe Daniel Diego Elena Emma Fatima Grace Hana Ivan Jamal Julia Kai "
    "Layla Leo Lucas Maria Mei Mohammed Nadia Noah Olivia Omar Priya Rahul Rosa Sam Sara Sofia Tom Wei Yusuf Zoe"
).split()
LAST_NAMES = (
    "Adams Ahmed Brown Chen Costa Davis Diaz Evans Garcia Gupta Hansen Ito Jones Kim Kowalski Lee Lopez "
    "Martin Mensah Miller Murphy Nguyen Novak Okafor Patel Rossi Santos Schmidt Singh Smith Tanaka Taylor "
    "Walker Wang Williams Wilson Yamamoto Zhang"
).split()
LOCATIONS = (
    "Austin, TX", "Boston, MA", "Chicago, IL", "Denver, CO", "New York, NY", "Seattle, WA", "Toronto, Canada",
    "Mexico City, Mexico", "London, UK", "Berlin, Germany", "Madrid, Spain", "Lagos, Nigeria", "Nairobi, Kenya",
    "Mumbai, India", "Bangalore, India", "Manila, Philippines", "Tokyo, Japan", "Sydney, Australia", "Remote",
)  # fmt: skip
EDUCATION = Weighted({"bachelors": 45, "masters": 30, "phd": 8, "high_school": 10, "other": 4, None: 3})
ARCHETYPE = Weighted({"steady": 45, "high_performer": 18, "new_tutor": 15, "at_risk": 12, "churning": 7, None: 3})
STATUS = Weighted({"active": 80, "inactive": 8, "on_leave": 6, "churned": 6})
# Offsets as (suffix, minutes east of UTC); "" is a naive timestamp (taken as UTC).
OFFSETS = Weighted(
    {("", 0): 20, ("Z", 0): 20, ("+00:00", 0): 4, ("-05:00", -300): 20, ("-08:00", -480): 10,
     ("-06:00", -360): 6, ("+05:30", 330): 10, ("+01:00", 60): 6, ("+09:00", 540): 4}
)  # fmt: skip
# Local start hour, 0..23: all hours, most in the afternoon and evening.
HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 5, 6, 6, 7, 9, 11, 12, 12, 11, 9, 6, 3, 2)
HOUR = Weighted(dict(enumerate(HOUR_WEIGHTS)))
DURATION = Weighted({30: 22, 45: 20, 60: 38, 90: 12, 120: 4, 15: 2, 75: 2})
SESSION_TYPE = Weighted({"regular": 70, "makeup": 8, "group": 7, "exam_prep": 7, "trial": 8})
RATING = Weighted({1: 3, 2: 5, 3: 12, 4: 35, 5: 45})
CATEGORIES = (
    "subject_knowledge_rating",
    "communication_rating",
    "patience_rating",
    "engagement_rating",
    "helpfulness_rating",
)
IMPROVEMENT_AREAS = (
    "punctuality", "pacing", "clarity", "patience", "preparation", "engagement", "homework feedback",
    "technical setup", "more examples", "session structure",
)  # fmt: skip
PRAISE = (
    "Clear explanations and very patient.", "Great session, I finally understand it.",
    "Helpful examples and good pacing.", "Really engaging, thank you!", "Well prepared and encouraging.",
)  # fmt: skip
CRITIQUE = (
    "Started late and felt rushed.", "Hard to follow at times.", "Audio kept cutting out.",
    "Would like more practice problems.", "Too fast for me.",
)  # fmt: skip
