"""Persist a chunk: upsert its rows and settle its raw records in one transaction; find the
children that waited for what was just persisted."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from etl_app.models import PERSISTED, RECEIVED
from etl_app.pipeline.enrich import parent_refs
from etl_app.record_types import RecordType


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
