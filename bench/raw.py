"""The raw limit: COPY into a temp staging table + INSERT … ON CONFLICT, straight psycopg.

The records are turned into column values before the clock starts, by the small converter
below (no etl_app code), and written with binary COPY in chunks, one transaction each, into a scratch copy
of the sessions table (``LIKE sessions INCLUDING ALL``: same columns and indexes). The same
rows are then written again, so every row is an update.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

SCRATCH = "bench_raw_sessions"
STAGE = "bench_raw_stage"


def _ts(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _time_of_day(hour: int) -> str:
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 17:
        return "afternoon"
    return "evening" if 17 <= hour < 22 else "night"


def session_columns(payload: dict[str, Any], lineage: dict[str, Any]) -> dict[str, Any]:
    """A generated session payload as the sessions table's column values."""
    start = _ts(payload["scheduled_start"])
    actual = _ts(payload.get("actual_start"))
    late = payload.get("late_start_minutes")
    if late is None and actual is not None:
        late = max(0, int((actual - start).total_seconds() // 60))
    no_show = payload.get("no_show", False)
    late_or_zero = late or 0
    return {
        **payload,
        "is_first_session": payload.get("is_first_session", payload["session_number"] == 1),
        "scheduled_start": start,
        "actual_start": actual,
        "tutor_initiated_reschedule": payload.get("tutor_initiated_reschedule", False),
        "no_show": no_show,
        "late_start_minutes": late,
        "technical_issues": payload.get("technical_issues", False),
        "is_weekend": start.isoweekday() >= 6,
        "time_of_day": _time_of_day(start.hour),
        "is_late_start": late_or_zero > 5,
        "actual_duration_minutes": 0 if no_show else max(0, payload["duration_minutes"] - late_or_zero),
        "week_of_year": start.isocalendar().week,
        "month_of_year": start.month,
        **lineage,
    }


def to_rows(payloads: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[tuple]:
    now = datetime.now(UTC)
    lineage = {
        "ingestion_id": uuid.uuid4(),
        "received_at": now,
        "enriched_at": now,
        "persisted_at": now,
        "schema_version": 1,
        "source": "bench-raw",
    }
    rows = []
    for payload in payloads:
        values = session_columns(payload, lineage)
        rows.append(tuple(values.get(c) for c in columns))
    return rows


def _columns(conn: psycopg.Connection, table: str) -> list[tuple[str, str]]:
    """(name, type) of the table's columns, in order."""
    return list(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
    )


def _write(
    conn: psycopg.Connection, rows: Sequence[tuple], typed: Sequence[tuple[str, str]], key: str, chunk: int
) -> float:
    """Write every row (binary COPY), ``chunk`` rows a transaction; returns the seconds it took."""
    columns = [name for name, _ in typed]
    quoted = ", ".join(f'"{c}"' for c in columns)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c != key)
    upsert = (
        f'INSERT INTO "{SCRATCH}" ({quoted}) SELECT {quoted} FROM "{STAGE}" '
        f'ON CONFLICT ("{key}") DO UPDATE SET {updates}'
    )
    copy_sql = f'COPY "{STAGE}" ({quoted}) FROM STDIN (FORMAT BINARY)'
    started = time.perf_counter()
    for i in range(0, len(rows), chunk):
        with conn.transaction():
            with conn.cursor().copy(copy_sql) as copy:
                copy.set_types([t for _, t in typed])
                for row in rows[i : i + chunk]:
                    copy.write_row(row)
            conn.execute(upsert)
    return time.perf_counter() - started


def raw_limit(
    database_url: str,
    payloads: Sequence[dict[str, Any]],
    *,
    chunk: int = 10_000,
    keep_table: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Rows/s for new rows and for all-updates of these session payloads; the sessions table must exist."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{SCRATCH}"')
        conn.execute(f'CREATE TABLE "{SCRATCH}" (LIKE sessions INCLUDING ALL)')
        conn.execute(f'CREATE TEMP TABLE "{STAGE}" (LIKE "{SCRATCH}") ON COMMIT DELETE ROWS')
        typed = _columns(conn, SCRATCH)
        rows = to_rows(payloads, [name for name, _ in typed])
        if _is_superuser(conn):
            conn.execute("CHECKPOINT")  # so that no checkpoint from earlier writes lands in the timing
        if on_step:
            on_step("new rows")
        insert_s = _write(conn, rows, typed, "session_id", chunk)
        if on_step:
            on_step("all updates")
        update_s = _write(conn, rows, typed, "session_id", chunk)
        stored = conn.execute(f'SELECT count(*) FROM "{SCRATCH}"').fetchone()[0]
        if not keep_table:
            conn.execute(f'DROP TABLE "{SCRATCH}"')
    n = len(rows)
    return {
        "records": n,
        "chunk": chunk,
        "rows_stored": stored,
        "insert_seconds": round(insert_s, 3),
        "update_seconds": round(update_s, 3),
        "insert_rows_per_s": round(n / insert_s, 1) if insert_s else None,
        "update_rows_per_s": round(n / update_s, 1) if update_s else None,
    }


def _is_superuser(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
