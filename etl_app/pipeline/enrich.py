"""Look up a chunk's parents, derive its fields, and park the children whose parent is missing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl_app import errors
from etl_app.clock import utcnow
from etl_app.deadletters.store import Failure
from etl_app.record_types import RecordType, Registry


def fetch_parents(
    conn: sa.Connection, rt: RecordType, registry: Registry, items: Sequence[Mapping[str, Any]]
) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The stored parent rows the chunk refers to, one query per parent type."""
    found: dict[tuple[str, str], Mapping[str, Any]] = {}
    for ref in rt.parents:
        parent = registry[ref.record_type]
        keys = sorted({item["data"][ref.field] for item in items})
        if not keys:
            continue
        key_col = parent.table.c[parent.key]
        for row in conn.execute(sa.select(parent.table).where(key_col.in_(keys))).mappings():
            found[(ref.record_type, row[parent.key])] = row
    return found


@dataclass
class Waiting:
    """An item whose parent is not stored yet."""

    item: dict[str, Any]
    parent_ref: str  # "<type>:<key>"


def enrich_chunk(
    rt: RecordType,
    items: Sequence[dict[str, Any]],
    parent_rows: Mapping[tuple[str, str], Mapping[str, Any]],
    now: datetime | None = None,
) -> tuple[list[dict[str, Any]], list[Waiting], list[Failure]]:
    """Derive fields for every item whose parents exist and agree."""
    now = now or utcnow()
    done: list[dict[str, Any]] = []
    waiting: list[Waiting] = []
    failures: list[Failure] = []
    for item in items:
        data = item["data"]
        parents: dict[str, Mapping[str, Any]] = {}
        problem: Waiting | Failure | None = None
        for ref in rt.parents:
            key = data[ref.field]
            row = parent_rows.get((ref.record_type, key))
            if row is None:
                problem = Waiting(item, f"{ref.record_type}:{key}")
                break
            mismatched = [(c, p) for c, p in ref.must_match if data.get(c) != row.get(p)]
            if mismatched:
                detail = ", ".join(
                    f"{c}={data.get(c)!r} but {ref.record_type}.{p}={row.get(p)!r}" for c, p in mismatched
                )
                problem = Failure(item["id"], errors.PARENT_MISMATCH, f"{ref.field} {key!r}: {detail}")
                break
            parents[ref.record_type] = row
        if isinstance(problem, Waiting):
            waiting.append(problem)
            continue
        if isinstance(problem, Failure):
            failures.append(problem)
            continue
        derived = rt.derive(data, item["received_at"], parents)
        done.append({**item, "data": {**data, **derived}, "enriched_at": now})
    return done, waiting, failures


def mark_waiting(conn: sa.Connection, waiting: Sequence[Waiting], retry_at: datetime) -> None:
    """Remember what each waiting record waits for, and when it will be tried again."""
    conn.execute(
        sa.text(
            "UPDATE raw_records SET waiting_on = w.ref, waiting_since = coalesce(waiting_since, now()), "
            "attempts = attempts + 1, "
            "last_error = 'waiting for ' || w.ref, enqueued_at = :retry_at, updated_at = now() "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:refs AS text[])) AS w(id, ref) "
            "WHERE raw_records.id = w.id AND raw_records.status = 'received'"
        ),
        {"ids": [w.item["id"] for w in waiting], "refs": [w.parent_ref for w in waiting], "retry_at": retry_at},
    )


def parent_refs(record_type: str, keys: Iterable[str]) -> list[str]:
    """The ``waiting_on`` values naming these parents."""
    return [f"{record_type}:{k}" for k in keys]
