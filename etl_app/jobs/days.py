"""What the day-based jobs share: their window as query parameters, and reading their rows back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from etl_app.jobs.context import Window


def bounds(window: Window) -> dict[str, Any]:
    """The window as query parameters: its first and last day (``start``, ``end``) and the
    instants they span (``lo`` inclusive, ``hi`` exclusive, UTC)."""
    return {
        "start": window.start,
        "end": window.end,
        "lo": datetime.combine(window.start, time(), UTC),
        "hi": datetime.combine(window.end + timedelta(days=1), time(), UTC),
    }


def stored_days(
    conn: sa.Connection, table: str, key_column: str, key: str, columns: Sequence[str], start: date, end: date
) -> list[dict[str, Any]]:
    """The rows of ``table`` (keyed by ``key_column`` and ``day``) for ``key`` from ``start`` to
    ``end`` (inclusive), oldest first, as ``{day, *columns}``."""
    rows = conn.execute(
        sa.text(
            f"SELECT day, {', '.join(columns)} FROM {table} "
            f"WHERE {key_column} = :key AND day BETWEEN :start AND :end ORDER BY day"
        ),
        {"key": key, "start": start, "end": end},
    )
    return [dict(row) for row in rows.mappings()]
