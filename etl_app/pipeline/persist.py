"""Persist a chunk: upsert its rows and settle its raw records in one transaction; find the
children that waited for what was just persisted."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from etl_app.models import sql
from etl_app.pipeline.enrich import parent_refs
from etl_app.pipeline.stash import Item
from etl_app.record_types import RecordType
from etl_app.record_types.contract import EXTRA_COLUMN


def dedupe_last_wins(record_type: RecordType, items: Sequence[Item]) -> list[Item]:
    """One item per natural key: the latest received wins (ties: the later raw record)."""
    best: dict[Any, Item] = {}
    for item in items:
        key = item["data"][record_type.key]
        current = best.get(key)
        if current is None or (item["received_at"], item["id"]) >= (current["received_at"], current["id"]):
            best[key] = item
    return [best[k] for k in sorted(best)]


def _staging_table(conn: sa.Connection, record_type: RecordType, columns: Sequence[str]) -> str:
    """A temporary staging table of this connection for these columns, emptied at each commit.

    Created (if missing) in every transaction rather than remembered: a creation rolled back
    with its transaction would otherwise be believed to exist. The name carries a digest of
    the columns, so a migration that changes the table gets a new staging table."""
    digest = hashlib.blake2s(",".join(columns).encode(), digest_size=4).hexdigest()
    name = f"_stage_{record_type.name}_{digest}"
    quoted = ", ".join(f'"{c}"' for c in columns)
    conn.exec_driver_sql(
        f'CREATE TEMP TABLE IF NOT EXISTS "{name}" ON COMMIT DELETE ROWS AS '
        f'SELECT {quoted} FROM "{record_type.table.name}" WITH NO DATA'
    )
    return name


def persist_chunk(conn: sa.Connection, record_type: RecordType, items: Sequence[Item]) -> list[str]:
    """Mark the chunk's raw records persisted and upsert their rows (COPY into a staging table,
    then one INSERT … ON CONFLICT), in the caller's transaction. Returns the natural keys written.

    Only records still unsettled are written (the first statement locks and filters them), so a
    late redelivery cannot overwrite what a replay wrote since. Between records of one key the
    latest wins: ``(received_at, raw_record_id)`` orders them, whatever chunk commits last.
    A replayed dead letter among them records the outcome (:func:`_settle_replays`)."""
    if not items:
        return []
    ids = [item["id"] for item in items]
    marked = conn.execute(_MARK_PERSISTED, {"ids": ids}).all()
    unsettled = {raw_id for raw_id, _ in marked}
    replays = {raw_id for raw_id, replayed in marked if replayed}
    rows = dedupe_last_wins(record_type, [item for item in items if item["id"] in unsettled])
    if not rows:
        return []
    columns = [c.name for c in record_type.table.columns if c.name != "persisted_at"]
    stage = _staging_table(conn, record_type, columns)
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f'COPY "{stage}" ({", ".join(columns)}) FROM STDIN') as copy:
        for item in rows:
            copy.write_row([_column_value(record_type, item, name) for name in columns])
    quoted = ", ".join(f'"{c}"' for c in columns)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in [*columns, "persisted_at"] if c != record_type.key)
    table = record_type.table.name
    conn.exec_driver_sql(
        f'INSERT INTO "{table}" ({quoted}, persisted_at) '
        f'SELECT {quoted}, now() FROM "{stage}" ORDER BY "{record_type.key}" '
        f'ON CONFLICT ("{record_type.key}") DO UPDATE SET {updates} '
        f'WHERE ("{table}".received_at, coalesce("{table}".raw_record_id, 0)) '
        f"<= (excluded.received_at, excluded.raw_record_id)"
    )
    conn.exec_driver_sql(f'TRUNCATE "{stage}"')
    if replays:
        _settle_replays(conn, record_type, [item for item in items if item["id"] in replays])
    return [item["data"][record_type.key] for item in rows]


# Marks the raw records persisted and returns those that were still unsettled, each with
# whether it is the record of a replayed dead letter.
_MARK_PERSISTED = sql(
    """
    WITH done AS (
        UPDATE raw_records SET status = :PERSISTED, updated_at = now(), waiting_on = NULL, last_error = NULL
        WHERE id = ANY(:ids) AND status = :RECEIVED
        RETURNING id
    )
    SELECT done.id, d.id IS NOT NULL FROM done
    LEFT JOIN dead_letters d ON d.raw_record_id = done.id AND d.status = :REPLAYED
    """
)


def _settle_replays(conn: sa.Connection, record_type: RecordType, items: Sequence[Item]) -> None:
    """The outcome of these replayed records, once the chunk's rows are written: ``persisted``
    when the stored row of the key is theirs; else their dead letter becomes ``superseded``, by
    the later record that row is (one of the chunk, or stored before). The rows of these keys
    are locked by the upsert until the commit, so that is what the table holds then."""
    table, key = record_type.table.name, record_type.key
    key_type = record_type.table.c[key].type.compile(dialect=conn.dialect)
    conn.execute(
        sql(
            f"""
            WITH stored AS (
                SELECT w.id, t.raw_record_id, t.ingestion_id, t.raw_record_id IS NOT DISTINCT FROM w.id AS landed
                FROM unnest(CAST(:ids AS bigint[]), CAST(:keys AS {key_type}[])) AS w(id, key)
                JOIN "{table}" t ON t."{key}" = w.key
            )
            UPDATE dead_letters d SET
                status = CASE WHEN stored.landed THEN d.status ELSE :SUPERSEDED END,
                last_outcome = CASE WHEN stored.landed THEN :PERSISTED ELSE :SUPERSEDED END,
                superseded_by = CASE WHEN stored.landed THEN NULL ELSE stored.raw_record_id END,
                superseded_by_ingestion_id = CASE WHEN stored.landed THEN NULL ELSE stored.ingestion_id END
            FROM stored WHERE d.raw_record_id = stored.id AND d.status = :REPLAYED
            """
        ),
        {"ids": [item["id"] for item in items], "keys": [item["data"][key] for item in items]},
    )


_LINEAGE_FROM_ITEM = {"ingestion_id", "received_at", "enriched_at"}


def _column_value(record_type: RecordType, item: Mapping[str, Any], name: str) -> Any:
    if name in _LINEAGE_FROM_ITEM:
        return item[name]
    if name == "raw_record_id":
        return item["id"]
    if name == "schema_version":
        return record_type.schema_version
    if name == EXTRA_COLUMN:  # kept unknown fields (a schema contract's keep), as JSON text for COPY
        extra = item["data"].get(name)
        return None if extra is None else orjson.dumps(extra).decode()
    return item["data"].get(name)


def children_waiting_for(conn: sa.Connection, record_type: RecordType, keys: Sequence[str]) -> dict[str, list[int]]:
    """Unsettled records that wait for one of these parents, by record type.

    The rows are locked (FOR UPDATE) until the caller commits: a child being dead-lettered at
    this moment is then either seen here, or seen dead by :func:`etl_app.dead_letters.actions.replay_children`
    afterwards (call it after this, in the same transaction), or its dead-letter transaction
    sees this parent committed. No wake-up is lost between the two."""
    if not keys:
        return {}
    rows = conn.execute(
        sql(
            "SELECT r.id, r.record_type FROM raw_records r WHERE r.status = :RECEIVED "
            "AND r.waiting_on = ANY(:refs) ORDER BY r.id FOR UPDATE"
        ),
        {"refs": parent_refs(record_type.name, keys)},
    )
    out: dict[str, list[int]] = {}
    for raw_id, type_name in rows:
        out.setdefault(type_name, []).append(raw_id)
    return out
