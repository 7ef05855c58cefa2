"""The pipeline's domain steps as plain functions: load, validate, enrich, persist, dead-letter.

Nothing here imports Celery. Each function takes a SQLAlchemy ``Connection`` (the caller owns
the transaction) and plain data. A *chunk* travels between the stages as a dict:
``{"type": name, "ids": [raw ids]}`` into validate, ``{"type": name, "items": [...]}`` after it,
where an item is ``{"id", "ingestion_id", "received_at", "data"}`` (``data`` gains the derived
fields and ``enriched_at`` in enrich).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl_app import errors
from etl_app.models import DEAD, PERSISTED, RECEIVED
from etl_app.registry import RecordType, Registry


@dataclass
class Failure:
    """One record that failed for good (or ran out of budget), on its way to dead_letters."""

    raw_id: int
    error_type: str
    error: str
    traceback: str | None = None
    waiting_on: str | None = None  # "<type>:<key>" of the parent a missing_parent record waited for


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- load and validate ---------------------------------------------------------------------

_LOAD = sa.text(
    "SELECT id, ingestion_id, payload, received_at, waiting_since FROM raw_records "
    "WHERE id = ANY(:ids) AND status = 'received' ORDER BY id"
)


def load_raw(conn: sa.Connection, ids: Sequence[int]) -> list[sa.Row]:
    """The chunk's raw records that are still unsettled (settled ones are skipped: idempotence)."""
    return list(conn.execute(_LOAD, {"ids": list(ids)}))


def validate_chunk(rt: RecordType, raws: Iterable[sa.Row]) -> tuple[list[dict[str, Any]], list[Failure]]:
    """Check every raw payload against its schema; split into items and validation failures."""
    items: list[dict[str, Any]] = []
    failures: list[Failure] = []
    for raw in raws:
        data, field_errors = rt.validate(raw.payload, raw.received_at)
        if data is None:
            failures.append(Failure(raw.id, errors.VALIDATION, format_field_errors(field_errors)))
            continue
        items.append(
            {
                "id": raw.id,
                "ingestion_id": str(raw.ingestion_id),
                "received_at": raw.received_at,
                "waiting_since": raw.waiting_since,
                "data": data,
            }
        )
    return items, failures


def format_field_errors(field_errors: Mapping[str, Sequence[str]]) -> str:
    return "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in field_errors.items())


# -- enrich ---------------------------------------------------------------------------------


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


# -- persist --------------------------------------------------------------------------------


def dedupe_last_wins(rt: RecordType, items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One item per natural key: the latest received wins (ties: the later raw record)."""
    best: dict[Any, Mapping[str, Any]] = {}
    for item in items:
        key = item["data"][rt.key]
        current = best.get(key)
        if current is None or (item["received_at"], item["id"]) >= (current["received_at"], current["id"]):
            best[key] = item
    return [best[k] for k in sorted(best)]


def _staging_table(conn: sa.Connection, rt: RecordType, columns: Sequence[str]) -> str:
    """A temporary staging table of this connection for these columns, emptied at each commit.

    Created (if missing) in every transaction rather than remembered: a creation rolled back
    with its transaction would otherwise be believed to exist. The name carries a digest of
    the columns, so a migration that changes the table gets a new staging table."""
    digest = hashlib.blake2s(",".join(columns).encode(), digest_size=4).hexdigest()
    name = f"_stage_{rt.name}_{digest}"
    quoted = ", ".join(f'"{c}"' for c in columns)
    conn.exec_driver_sql(
        f'CREATE TEMP TABLE IF NOT EXISTS "{name}" ON COMMIT DELETE ROWS AS '
        f'SELECT {quoted} FROM "{rt.table.name}" WITH NO DATA'
    )
    return name


def persist_chunk(conn: sa.Connection, rt: RecordType, items: Sequence[Mapping[str, Any]]) -> list[str]:
    """Mark the chunk's raw records persisted and upsert their rows (COPY into a staging table,
    then one INSERT … ON CONFLICT), in the caller's transaction. Returns the natural keys written.

    Only records still unsettled are written (the first statement locks and filters them), so a
    late redelivery cannot overwrite what a replay wrote since. Between records of one key the
    latest wins: ``(received_at, raw_record_id)`` orders them, whatever chunk commits last."""
    if not items:
        return []
    ids = [item["id"] for item in items]
    unsettled = {
        r[0] for r in conn.execute(_MARK_PERSISTED, {"ids": ids, "persisted": PERSISTED, "received": RECEIVED})
    }
    rows = dedupe_last_wins(rt, [item for item in items if item["id"] in unsettled])
    if not rows:
        return []
    columns = [c.name for c in rt.table.columns if c.name != "persisted_at"]
    stage = _staging_table(conn, rt, columns)
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f'COPY "{stage}" ({", ".join(columns)}) FROM STDIN') as copy:
        for item in rows:
            copy.write_row([_column_value(rt, item, name) for name in columns])
    quoted = ", ".join(f'"{c}"' for c in columns)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in [*columns, "persisted_at"] if c != rt.key)
    table = rt.table.name
    conn.exec_driver_sql(
        f'INSERT INTO "{table}" ({quoted}, persisted_at) '
        f'SELECT {quoted}, now() FROM "{stage}" ORDER BY "{rt.key}" '
        f'ON CONFLICT ("{rt.key}") DO UPDATE SET {updates} '
        f'WHERE ("{table}".received_at, coalesce("{table}".raw_record_id, 0)) '
        f"<= (excluded.received_at, excluded.raw_record_id)"
    )
    conn.exec_driver_sql(f'TRUNCATE "{stage}"')
    return [item["data"][rt.key] for item in rows]


# Marks the raw records persisted and returns those that were still unsettled; a replayed
# dead letter among them records the outcome.
_MARK_PERSISTED = sa.text(
    """
    WITH done AS (
        UPDATE raw_records SET status = :persisted, updated_at = now(), waiting_on = NULL, last_error = NULL
        WHERE id = ANY(:ids) AND status = :received
        RETURNING id
    ), outcome AS (
        UPDATE dead_letters d SET last_outcome = :persisted
        FROM done WHERE d.raw_record_id = done.id AND d.status = 'replayed'
    )
    SELECT id FROM done
    """
)

_LINEAGE_FROM_ITEM = {"ingestion_id", "received_at", "enriched_at"}


def _column_value(rt: RecordType, item: Mapping[str, Any], name: str) -> Any:
    if name in _LINEAGE_FROM_ITEM:
        return item[name]
    if name == "raw_record_id":
        return item["id"]
    if name == "schema_version":
        return rt.schema_version
    return item["data"].get(name)


def parent_refs(record_type: str, keys: Iterable[str]) -> list[str]:
    """The ``waiting_on`` values naming these parents."""
    return [f"{record_type}:{k}" for k in keys]


def children_waiting_for(conn: sa.Connection, rt: RecordType, keys: Sequence[str]) -> dict[str, list[int]]:
    """Unsettled records that wait for one of these parents, by record type.

    The rows are locked (FOR UPDATE) until the caller commits: a child being dead-lettered at
    this moment is then either seen here, or seen dead by :func:`etl_app.dlq.replay_children`
    afterwards (call it after this, in the same transaction), or its dead-letter transaction
    sees this parent committed. No wake-up is lost between the two."""
    if not keys:
        return {}
    rows = conn.execute(
        sa.text(
            "SELECT r.id, r.record_type FROM raw_records r WHERE r.status = 'received' "
            "AND r.waiting_on = ANY(:refs) ORDER BY r.id FOR UPDATE"
        ),
        {"refs": parent_refs(rt.name, keys)},
    )
    out: dict[str, list[int]] = {}
    for raw_id, record_type in rows:
        out.setdefault(record_type, []).append(raw_id)
    return out


# -- dead letters -----------------------------------------------------------------------------

_DEAD_LETTER = sa.text(
    """
    WITH f AS (
        SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:types AS text[]), CAST(:errs AS text[]),
                             CAST(:tbs AS text[]), CAST(:waits AS text[]))
                      AS f(id, error_type, error, traceback, waiting_on)
    ), dead AS (
        UPDATE raw_records r SET status = :dead, last_error = f.error, updated_at = now(),
            waiting_on = CASE WHEN f.error_type = :missing_parent THEN coalesce(f.waiting_on, r.waiting_on) END
        FROM f WHERE r.id = f.id AND r.status = :received
        RETURNING r.id, r.ingestion_id, r.record_type, r.natural_key, r.payload, r.attempts,
                  f.error_type, f.error, f.traceback
    )
    INSERT INTO dead_letters AS d (raw_record_id, ingestion_id, record_type, natural_key, payload,
                                   error_type, error, traceback, task_name, attempts, status)
    SELECT id, ingestion_id, record_type, natural_key, payload, error_type, error, traceback,
           :task_name, attempts, 'open' FROM dead
    ON CONFLICT (raw_record_id) DO UPDATE SET
        error_type = excluded.error_type, error = excluded.error, traceback = excluded.traceback,
        task_name = excluded.task_name, attempts = excluded.attempts, payload = excluded.payload,
        natural_key = excluded.natural_key, status = 'open', last_failed_at = now(), last_outcome = :dead
    RETURNING d.raw_record_id
    """
)


def dead_letter(conn: sa.Connection, failures: Sequence[Failure], task_name: str) -> list[int]:
    """Mark the records dead and record why, in the caller's transaction; idempotent.

    A ``missing_parent`` record keeps ``waiting_on`` (the parent it waited for), so that it is
    replayed when that parent lands; other dead records drop it. A record that fails again after
    a replay reopens its row: error and payload are updated, ``replay_count`` is kept and
    ``last_outcome`` becomes ``dead``."""
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
            "missing_parent": errors.MISSING_PARENT,
            "task_name": task_name,
            "dead": DEAD,
            "received": RECEIVED,
        },
    )
    return [r[0] for r in rows]
