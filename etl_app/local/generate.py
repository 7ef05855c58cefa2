"""Deterministic synthetic tutoring data: tutors, students, sessions and feedback.

The same seed gives the same records, byte for byte (each stream draws from its own
``random.Random``; no global random state). Every record is valid for an as-of at or
after :data:`REFERENCE` (2026-11-01T00:00Z).

Consistency: the streams are prefix-stable and index-based. Session ``i`` (0-based) refers
to a tutor among the first ``i // 40 + 1`` and a student among the first ``i // 8 + 1``, so
the first ``n`` sessions need :func:`plan` ``(n)`` tutors and students. Feedback walks the
session stream: session ``i`` gets at most one feedback, ``fb-<i+1>``, with that session's
tutor_id and student_id. :func:`dataset` gives the four consistent streams for ``n``
sessions; ``generate("feedback", count, ...)`` walks as many sessions as its count needs.

Distributions: tutors have 1-4 subjects from a realistic list (about 12% with a
case-variant duplicate), onboarding over the 3 years before REFERENCE, status mostly
active, ages 18-70. Students have grade levels 1-16. Sessions start over the 26 weeks
before REFERENCE at all hours, naive or with Z / -05:00 / +05:30 and other offsets; about
7% are no-shows, late starts are mostly 0-5 minutes, durations mostly 30/45/60/90. About
70% of sessions get feedback, ratings skewed positive, some category ratings missing,
some free text.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any, BinaryIO

import orjson

from etl_app.local.generate_vocabulary import (
    ALL_SUBJECTS,
    ARCHETYPE,
    CATEGORIES,
    CRITIQUE,
    DURATION,
    EDUCATION,
    FIRST_NAMES,
    HOUR,
    IMPROVEMENT_AREAS,
    LAST_NAMES,
    LOCATIONS,
    OFFSETS,
    ONBOARDING_DAYS,
    PRAISE,
    RATING,
    REFERENCE,
    SESSION_DAYS,
    SESSION_TYPE,
    STATUS,
    SUBJECT_TYPE,
    SUBJECTS,
)

TYPES = ("tutors", "students", "sessions", "feedback")
SESSIONS_PER_TUTOR = 40
SESSIONS_PER_STUDENT = 8
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:-]{0,40}")


def plan(sessions: int) -> dict[str, int]:
    """How many tutors and students the first ``sessions`` sessions refer to."""
    return {
        "tutors": -(-sessions // SESSIONS_PER_TUTOR) if sessions > 0 else 0,
        "students": -(-sessions // SESSIONS_PER_STUDENT) if sessions > 0 else 0,
        "sessions": sessions,
    }


def _ts(local: datetime, suffix: str) -> str:
    return local.isoformat(timespec="seconds") + suffix


def _case_variant(subject: str, rng: Random) -> str:
    variant = subject.lower() if rng.random() < 0.6 else subject.upper()
    return variant if variant != subject else subject.swapcase()


def tutor(seed: int, i: int, prefix: str = "") -> dict[str, Any]:
    """Tutor ``i``: drawn from its own ``Random`` so that sessions can look it up by index."""
    rng = Random(f"{seed}:tutors:{i}")
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    subject_type = SUBJECT_TYPE(rng)
    own = SUBJECTS[subject_type]
    subjects = rng.sample(own, min(len(own), 1 + int(rng.random() ** 1.6 * 3)))
    if rng.random() < 0.25:
        subjects.append(rng.choice(ALL_SUBJECTS))
    if rng.random() < 0.12:
        subjects.insert(rng.randint(1, len(subjects)), _case_variant(rng.choice(subjects), rng))
    onboarded = REFERENCE.date() - timedelta(days=rng.randrange(ONBOARDING_DAYS + 1))
    archetype = ARCHETYPE(rng)
    status = "churned" if archetype == "churning" and rng.random() < 0.5 else STATUS(rng)
    record: dict[str, Any] = {
        "tutor_id": f"{prefix}tut-{i + 1:06d}",
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{i + 1}@example.org",
        "age": min(70, max(18, round(rng.triangular(18, 70, 29)))),
    }
    roll = rng.random()
    if roll < 0.9:
        record["location"] = rng.choice(LOCATIONS)
    elif roll < 0.93:
        record["location"] = ""
    if (education := EDUCATION(rng)) is not None:
        record["education_level"] = education
    record["subjects"] = subjects
    if rng.random() < 0.9:
        record["subject_type"] = subject_type
    if archetype is not None:
        record["behavioral_archetype"] = archetype
    record["onboarding_date"] = onboarded.isoformat()
    if rng.random() < 0.85:
        record["baseline_sessions_per_week"] = round(min(80.0, rng.gammavariate(2.0, 4.0)), 1)
    record["status"] = status
    if rng.random() < 0.6:
        days_since = (REFERENCE.date() - onboarded).days
        moment = REFERENCE - timedelta(days=rng.randint(0, days_since), seconds=rng.randrange(86400))
        record["updated_at"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return record


def _tutors(seed: int, n: int, prefix: str) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield tutor(seed, i, prefix)


def _students(seed: int, n: int, prefix: str) -> Iterator[dict[str, Any]]:
    rng = Random(f"{seed}:students")
    for i in range(n):
        record: dict[str, Any] = {"student_id": f"{prefix}stu-{i + 1:06d}"}
        roll = rng.random()
        if roll < 0.9:
            record["name"] = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        elif roll < 0.93:
            record["name"] = None
        if rng.random() < 0.92:
            record["grade_level"] = min(16, max(1, round(rng.triangular(1, 16, 9))))
        if rng.random() < 0.7:
            record["enrolled_on"] = (REFERENCE.date() - timedelta(days=rng.randrange(4 * 365))).isoformat()
        yield record


def _distinct(items: list[str]) -> list[str]:
    """Items without case-insensitive repeats, first spelling kept."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item.casefold() not in seen:
            seen.add(item.casefold())
            out.append(item)
    return out


@dataclass
class _Session:
    """A generated session with what its feedback needs."""

    index: int
    record: dict[str, Any]
    end_utc: datetime
    suffix: str
    offset_minutes: int


class _SessionStream:
    """Sessions in index order; remembers per-student counts (session_number) and tutor subjects."""

    def __init__(self, seed: int, prefix: str) -> None:
        self.seed, self.prefix = seed, prefix
        self.rng = Random(f"{seed}:sessions")
        self.per_student: dict[int, int] = {}
        self.subjects: dict[int, list[str]] = {}
        self.start_day = datetime(REFERENCE.year, REFERENCE.month, REFERENCE.day) - timedelta(days=SESSION_DAYS)

    def _tutor_subjects(self, k: int) -> list[str]:
        found = self.subjects.get(k)
        if found is None:
            found = self.subjects[k] = _distinct(tutor(self.seed, k)["subjects"])
        return found

    def __iter__(self) -> Iterator[_Session]:
        rng, prefix = self.rng, self.prefix
        for i in itertools.count():
            pool_t, pool_s = i // SESSIONS_PER_TUTOR + 1, i // SESSIONS_PER_STUDENT + 1
            if pool_t > 4 and rng.random() < 0.3:
                t = rng.randrange(pool_t - pool_t // 4, pool_t)
            else:
                t = rng.randrange(pool_t)
            s = rng.randrange(pool_s - max(1, pool_s // 10), pool_s) if rng.random() < 0.5 else rng.randrange(pool_s)
            number = self.per_student.get(s, 0) + 1
            self.per_student[s] = number
            suffix, offset = OFFSETS(rng)
            minute = rng.choice((0, 0, 15, 30, 30, 45)) if rng.random() < 0.85 else rng.randrange(60)
            local = self.start_day + timedelta(days=rng.randrange(SESSION_DAYS), hours=HOUR(rng), minutes=minute)
            duration = DURATION(rng)
            session_type = "trial" if number == 1 and rng.random() < 0.4 else SESSION_TYPE(rng)
            record: dict[str, Any] = {
                "session_id": f"{prefix}ses-{i + 1:07d}",
                "tutor_id": f"{prefix}tut-{t + 1:06d}",
                "student_id": f"{prefix}stu-{s + 1:06d}",
                "session_number": number,
            }
            if rng.random() < 0.3:
                record["is_first_session"] = number == 1
            record["scheduled_start"] = _ts(local, suffix)
            no_show = rng.random() < 0.07
            if not no_show:
                roll = rng.random()
                if roll < 0.1:
                    late_seconds = -rng.randrange(1, 181)
                elif roll < 0.6:
                    late_seconds = rng.randrange(0, 120)
                elif roll < 0.8:
                    late_seconds = rng.randrange(120, 300)
                elif roll < 0.95:
                    late_seconds = rng.randrange(300, 900)
                else:
                    late_seconds = rng.randrange(900, 2700)
                record["actual_start"] = _ts(local + timedelta(seconds=late_seconds), suffix)
            record["duration_minutes"] = duration
            record["subject"] = rng.choice(self._tutor_subjects(t))
            record["session_type"] = session_type
            if rng.random() < 0.04:
                record["tutor_initiated_reschedule"] = True
            elif rng.random() < 0.5:
                record["tutor_initiated_reschedule"] = False
            if no_show:
                record["no_show"] = True
            else:
                if rng.random() < 0.5:
                    record["no_show"] = False
                if rng.random() < 0.25:
                    record["late_start_minutes"] = max(0, late_seconds // 60)
                if rng.random() < 0.85:
                    engagement = round(rng.betavariate(6, 2), 2)
                    record["engagement_score"] = engagement
                    if rng.random() < 0.7:
                        record["learning_objectives_met"] = rng.random() < engagement
            if rng.random() < 0.06:
                record["technical_issues"] = True
            elif rng.random() < 0.4:
                record["technical_issues"] = False
            end_utc = (local - timedelta(minutes=offset) + timedelta(minutes=duration)).replace(tzinfo=UTC)
            yield _Session(i, record, end_utc, suffix, offset)


def _feedback_for(rng: Random, session: _Session, prefix: str) -> dict[str, Any] | None:
    """One session's feedback, or None (about 74% of shown sessions, 10% of no-shows)."""
    srec = session.record
    no_show = srec.get("no_show", False)
    if rng.random() >= (0.1 if no_show else 0.74):
        return None
    overall = RATING(rng) if not no_show else rng.choice((1, 1, 2, 3))
    record: dict[str, Any] = {
        "feedback_id": f"{prefix}fb-{session.index + 1:07d}",
        "session_id": srec["session_id"],
        "student_id": srec["student_id"],
        "tutor_id": srec["tutor_id"],
        "overall_rating": overall,
    }
    for name in CATEGORIES:
        roll = rng.random()
        if roll < 0.78:
            record[name] = min(5, max(1, overall + rng.choice((-1, 0, 0, 0, 1))))
        elif roll < 0.83:
            record[name] = None
    roll = rng.random()
    if roll < 0.38:
        text = rng.choice(PRAISE if overall >= 4 else CRITIQUE)
        record["free_text_feedback"] = f"  {text} " if rng.random() < 0.1 else text
    elif roll < 0.4:
        record["free_text_feedback"] = "   "
    if rng.random() < 0.5:
        record["is_first_session"] = srec["session_number"] == 1
    if rng.random() < 0.8:
        record["would_recommend"] = overall >= 4 if rng.random() < 0.9 else overall >= 3
    if rng.random() < 0.3:
        record["improvement_areas"] = rng.sample(IMPROVEMENT_AREAS, rng.randint(1, 3))
    if rng.random() < 0.04:
        delay = timedelta(minutes=-rng.randrange(1, 31))
    else:
        delay = timedelta(seconds=min(14 * 86400, int(rng.expovariate(1 / (8 * 3600)))))
    submitted = session.end_utc + delay
    roll = rng.random()
    if roll < 0.6:
        record["submitted_at"] = submitted.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif roll < 0.8 and session.suffix:
        local = (submitted + timedelta(minutes=session.offset_minutes)).replace(tzinfo=None)
        record["submitted_at"] = _ts(local, session.suffix)
    else:
        record["submitted_at"] = submitted.replace(tzinfo=None).isoformat(timespec="seconds")
    return record


def _sessions(seed: int, n: int, prefix: str) -> Iterator[dict[str, Any]]:
    for session in _SessionStream(seed, prefix):
        if session.index >= n:
            return
        yield session.record


def _feedback(seed: int, n: int, prefix: str, *, max_sessions: int | None = None) -> Iterator[dict[str, Any]]:
    """``n`` feedback records (or all those of the first ``max_sessions`` sessions)."""
    rng = Random(f"{seed}:feedback")
    made = 0
    for session in _SessionStream(seed, prefix):
        if made >= n or (max_sessions is not None and session.index >= max_sessions):
            return
        record = _feedback_for(rng, session, prefix)
        if record is not None:
            made += 1
            yield record


def _check(count: int, id_prefix: str) -> None:
    if count < 0:
        raise ValueError("count must not be negative")
    if not _PREFIX_RE.fullmatch(id_prefix):
        raise ValueError("id_prefix must be at most 40 characters of A-Z a-z 0-9 _ . : -")


def generate(record_type: str, count: int, seed: int, *, id_prefix: str = "") -> Iterator[dict[str, Any]]:
    """``count`` records of one type (see the module docstring for how they refer to each other)."""
    _check(count, id_prefix)
    if record_type == "tutors":
        return _tutors(seed, count, id_prefix)
    if record_type == "students":
        return _students(seed, count, id_prefix)
    if record_type == "sessions":
        return _sessions(seed, count, id_prefix)
    if record_type == "feedback":
        return _feedback(seed, count, id_prefix)
    raise ValueError(f"unknown record type {record_type!r}; expected one of {', '.join(TYPES)}")


@dataclass(frozen=True)
class Dataset:
    """The consistent streams for ``sessions`` sessions: their tutors and students, and their feedback."""

    sessions: int
    seed: int
    id_prefix: str = ""

    @property
    def counts(self) -> dict[str, int]:
        return plan(self.sessions)

    def stream(self, record_type: str) -> Iterator[dict[str, Any]]:
        if record_type == "feedback":
            return _feedback(self.seed, self.sessions, self.id_prefix, max_sessions=self.sessions)
        if record_type not in TYPES:
            raise ValueError(f"unknown record type {record_type!r}")
        return generate(record_type, self.counts[record_type], self.seed, id_prefix=self.id_prefix)


def dataset(sessions: int, seed: int, *, id_prefix: str = "") -> Dataset:
    """Tutors, students, sessions and feedback where every child's parents are in the set."""
    _check(sessions, id_prefix)
    return Dataset(sessions, seed, id_prefix)


def write_records(
    records: Iterable[dict[str, Any]], out: BinaryIO, fmt: str = "ndjson", record_type: str | None = None
) -> int:
    """Write records as NDJSON (one a line) or as one JSON array, or (given their ``record_type``)
    as CSV, TSV, XLSX or Parquet (:mod:`etl_app.local.generate_formats`); returns how many."""
    if fmt not in ("ndjson", "json"):
        from etl_app.local.generate_formats import write_flat

        if record_type is None:
            raise ValueError(f"{fmt} needs the record type (its columns are the schema's fields)")
        return write_flat(records, out, fmt, record_type)
    n = 0
    buffer: list[bytes] = []
    sep = b"\n" if fmt == "ndjson" else b",\n"
    if fmt == "json":
        out.write(b"[\n")
    for record in records:
        if n and fmt == "json":
            buffer.append(sep)
        buffer.append(orjson.dumps(record))
        if fmt == "ndjson":
            buffer.append(sep)
        n += 1
        if len(buffer) >= 20_000:
            out.write(b"".join(buffer))
            buffer.clear()
    out.write(b"".join(buffer))
    if fmt == "json":
        out.write(b"\n]\n" if n else b"]\n")
    out.flush()
    return n
