"""Writing dead letters: the raw records become ``dead`` and ``dead_letters`` says why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from etl_app.dead_letters.causes import normalise
from etl_app.models import sql, unsettled_by_id


@dataclass
class Failure:
    """One record that failed for good (or ran out of budget), on its way to dead_letters."""

    raw_id: int
    error_type: str
    error: str
    traceback: str | None = None
    waiting_on: str | None = None  # "<type>:<key>" of the parent a missing_parent record waited for

    def to_message(self) -> dict[str, Any]:
        """As it travels to the dead-letter consumer (a JSON object); read by :meth:`from_message`."""
        out = asdict(self)
        out["id"] = out.pop("raw_id")
        return out

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Failure:
        return cls(
            int(message["id"]),
            message["error_type"],
            message["error"],
            message.get("traceback"),
            message.get("waiting_on"),
        )


_DEAD_LETTER = sql(
    f"""
    WITH f AS (
        SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:types AS text[]), CAST(:errs AS text[]),
                             CAST(:tbs AS text[]), CAST(:waits AS text[]), CAST(:causes AS text[]))
                      AS f(id, error_type, error, traceback, waiting_on, cause)
    ), dead AS (
        UPDATE raw_records r SET status = :DEAD, last_error = f.error, updated_at = now(),
            waiting_on = CASE WHEN f.error_type = :MISSING_PARENT THEN coalesce(f.waiting_on, r.waiting_on) END
        FROM f WHERE r.id = f.id AND {unsettled_by_id("r.status")}
        RETURNING r.id, r.ingestion_id, r.record_type, r.natural_key, r.payload, r.attempts,
                  f.error_type, f.error, f.traceback, f.cause
    )
    INSERT INTO dead_letters AS d (raw_record_id, ingestion_id, record_type, natural_key, payload,
                                   error_type, error, cause, traceback, task_name, attempts, status)
    SELECT id, ingestion_id, record_type, natural_key, payload, error_type, error, cause, traceback,
           :task_name, attempts, :OPEN FROM dead
    ON CONFLICT (raw_record_id) DO UPDATE SET
        error_type = excluded.error_type, error = excluded.error, cause = excluded.cause,
        traceback = excluded.traceback,
        task_name = excluded.task_name, attempts = excluded.attempts, payload = excluded.payload,
        natural_key = excluded.natural_key, status = :OPEN, last_failed_at = now(), last_outcome = :DEAD
    RETURNING d.raw_record_id
    """
)


def dead_letter(conn: sa.Connection, failures: Sequence[Failure], task_name: str) -> list[int]:
    """Mark the records dead and record why, in the caller's transaction; idempotent.

    A ``missing_parent`` record keeps ``waiting_on`` (the parent it waited for), so that it is
    replayed when that parent lands; other dead records drop it. A record that fails again after
    a replay reopens its row: error and payload are updated, ``replay_count`` is kept and
    ``last_outcome`` becomes ``dead``. The error's cause (:func:`.causes.normalise`) is written
    with it, which puts it in its group."""
    if not failures:
        return []
    rows = conn.execute(
        _DEAD_LETTER,
        {
            "ids": [f.raw_id for f in failures],
            "types": [f.error_type for f in failures],
            "errs": [f.error for f in failures],
            "tbs": [f.traceback for f in failures],
            "waits": [f.waiting_on for f in failures],
            "causes": [normalise(f.error) for f in failures],
            "task_name": task_name,
        },
    )
    return [r[0] for r in rows]
