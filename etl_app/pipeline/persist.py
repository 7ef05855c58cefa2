"""Persist a chunk: upsert its rows and settle its raw records in one transaction; find the
children that waited for what was just persisted.

The rows are built inside PostgreSQL from the chunk's rows document (:func:`rows_document`, which
enrich puts in the stash for persist, :mod:`etl_app.pipeline.stash`): one JSON array of rows, each
row an array of the table's columns in a fixed order (:func:`row_columns`: the lineage columns,
then the record's values), read by position (``e ->> 3``) and cast to the column's type. One
statement locks and settles the chunk's unsettled raw records, keeps the latest record of each
key and upserts. The worker hands the document over as it came from Redis, so no Python runs per
record here: no decoding, no row building, no staging COPY.

Why jsonb arrays rather than objects read by ``json_populate_recordset`` against the table's row
type (as before): that function builds a hash table of each object's keys; the document parsed
once into jsonb and each row's elements read by position cost about 5 µs of PostgreSQL a session
less (1,000 sessions: 8–9 ms against 11–17), and the keys made three fifths of the document.
(As ``json``, reading by position lexes a row again for each element: four times slower than
objects.) A type with a column of a kind not read by position here (:func:`_element`: ``json``,
a composite, an enum, a type of its own) keeps objects and ``json_populate_recordset``; a
document of objects stashed before arrays (by a worker of an earlier version, during an upgrade)
is turned into arrays first (:func:`persist_stashed`). Either way a value goes through its
type's own text input, as ``json_populate_recordset`` did: a string column is read as ``text``
so that a value too long for its ``varchar(n)`` is refused by the insert, not cut by a cast. What
differs is on values a validated record does not carry, or that compare equal: jsonb keeps
numbers as ``numeric``, so a ``-0.0`` is stored as ``0``; a number in exponent form (``1e16``)
or an array or object sent to a string column reads as jsonb writes it (``10000000000000000``,
``[1, "a"]``) rather than as sent.

Why rows rather than the stash's items (``{id, ingestion_id, received_at, enriched_at, data}``):
reading items took ``json_to_recordset`` over the document, then ``json_populate_record`` over
each item's ``data`` again, so PostgreSQL parsed every value twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from etl_app.models import json_array, json_list, sql, unsettled_by_id
from etl_app.pipeline.enrich import parent_refs
from etl_app.pipeline.stash import Item
from etl_app.record_types import RecordType

# The lineage columns a row takes from its item rather than from its values (they win over a
# value of the same name); ``schema_version`` is the record type's, ``persisted_at`` the statement's.
_FROM_ITEM = ("raw_record_id", "ingestion_id", "received_at", "enriched_at")
_NOT_FROM_VALUES = {*_FROM_ITEM, "schema_version", "persisted_at"}


@dataclass(frozen=True)
class Persisted:
    """What a persisted chunk wrote: the natural keys of its rows (sorted) and the ingestions
    of the raw records it settled, and how many it settled (a redelivery's records, settled
    already, are not counted again)."""

    keys: list[str] = field(default_factory=list)
    ingestion_ids: list[Any] = field(default_factory=list)
    settled: int = 0


@cache
def row_columns(record_type: RecordType) -> tuple[str, ...]:
    """The columns of a row of :func:`rows_document`, in order: the lineage columns
    ``raw_record_id``, ``ingestion_id``, ``received_at``, ``enriched_at`` (from the item), then
    every column of the table the record's values fill."""
    return (*_FROM_ITEM, *(str(c.name) for c in record_type.table.columns if c.name not in _NOT_FROM_VALUES))


def rows_document(record_type: RecordType, items: Sequence[Item]) -> bytes:
    """The chunk's enriched items as :func:`persist_stashed` reads them: one JSON array with a
    row per item, an array of :func:`row_columns` (the lineage from the item, over any value of
    that name; a value missing is null; values that are no column are left out). For a type
    read as objects (see the module's docstring), one flat object per item instead."""
    if not _by_position(record_type):
        return _objects_document(items)
    values = row_columns(record_type)[len(_FROM_ITEM) :]
    return orjson.dumps(
        [
            [one["id"], one["ingestion_id"], one["received_at"], one.get("enriched_at"), *map(one["data"].get, values)]
            for one in items
        ]
    )


def _objects_document(items: Sequence[Item]) -> bytes:
    return orjson.dumps(
        [
            {
                **one["data"],
                "raw_record_id": one["id"],
                "ingestion_id": one["ingestion_id"],
                "received_at": one["received_at"],
                "enriched_at": one.get("enriched_at"),
            }
            for one in items
        ]
    )


def rows_from_items(record_type: RecordType, document: bytes) -> bytes:
    """:func:`rows_document` of a stash document of items (``[{id, ingestion_id, received_at,
    enriched_at, data}, …]``), for a persist message whose enrich stashed items, as enrich did
    before it stashed rows: decoded and encoded again in Python, once per such chunk."""
    return rows_document(record_type, orjson.loads(document))


def _rows_from_objects(record_type: RecordType, document: bytes) -> bytes:
    """A rows document of flat objects (as enrich stashed it before rows were arrays) as arrays."""
    columns = row_columns(record_type)
    return orjson.dumps([[row.get(c) for c in columns] for row in orjson.loads(document)])


def persist_chunk(conn: sa.Connection, record_type: RecordType, items: Sequence[Item]) -> list[str]:
    """:func:`persist_stashed` for items in memory; returns the natural keys written."""
    if not items:
        return []
    return persist_stashed(conn, record_type, rows_document(record_type, items)).keys


def persist_stashed(conn: sa.Connection, record_type: RecordType, values: bytes) -> Persisted:
    """Mark the chunk's raw records persisted and upsert their rows in one statement, in the
    caller's transaction. ``values``: the chunk's :func:`rows_document` (as the stash holds it),
    each row naming its raw record.

    Only records still unsettled are written (the statement locks and filters them first), so a
    late redelivery cannot overwrite what a replay wrote since. Between
    records of one key the latest wins: ``(received_at, raw_record_id)`` orders them, whatever
    chunk commits last. A replayed dead letter among them records the outcome
    (:func:`_settle_replays`)."""
    if _by_position(record_type) and values.lstrip()[:2] == b"[{":
        values = _rows_from_objects(record_type, values)
    keys, ingestion_ids, replay_ids, replay_keys, settled = conn.execute(
        _upsert(record_type), {"values": values.decode(), "schema_version": record_type.schema_version}
    ).one()
    if replay_ids:
        _settle_replays(conn, record_type, replay_ids, replay_keys)
    return Persisted(sorted(orjson.loads(keys)), ingestion_ids, settled)


@cache
def _upsert(record_type: RecordType) -> sa.TextClause:
    """The record type's persist statement (see :func:`persist_stashed`). Its data-modifying
    parts run to completion whatever the final ``SELECT`` reads; the upsert reads the sorted
    latest rows, so every raw record is locked before the first row is written, and rows are
    written in key order (two chunks sharing keys wait for each other rather than deadlock).
    The replayed dead letters among the chunk's records are looked for only when there is a
    replayed dead letter at all (one probe of ``ix_dead_letters_status_id``): otherwise the
    lookup cost a probe of the dead letters' index per record, about 0.7 µs of PostgreSQL each."""
    table, key = record_type.table.name, record_type.key
    columns = row_columns(record_type)
    quoted = ", ".join(f'"{c}"' for c in columns)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in [*columns, "schema_version", "persisted_at"] if c != key)
    return sql(
        f"""
        WITH given AS MATERIALIZED ({given_rows(record_type)}),
        done AS (
            UPDATE raw_records SET status = :PERSISTED, updated_at = now(), waiting_on = NULL, last_error = NULL
            WHERE id = ANY(ARRAY(SELECT raw_record_id FROM given)) AND {unsettled_by_id()}
            RETURNING id, ingestion_id
        ),
        latest AS (
            SELECT DISTINCT ON (g."{key}") g.* FROM given g JOIN done ON done.id = g.raw_record_id
            ORDER BY g."{key}", g.received_at DESC, g.raw_record_id DESC
        ),
        written AS (
            INSERT INTO "{table}" ({quoted}, schema_version, persisted_at)
            SELECT {quoted}, :schema_version, now() FROM latest ORDER BY "{key}"
            ON CONFLICT ("{key}") DO UPDATE SET {updates}
            WHERE ("{table}".received_at, coalesce("{table}".raw_record_id, 0))
                <= (excluded.received_at, excluded.raw_record_id)
        ),
        replays AS (
            SELECT g.raw_record_id, g."{key}" AS key FROM given g
            JOIN done ON done.id = g.raw_record_id
            JOIN dead_letters d ON d.raw_record_id = done.id AND d.status = :REPLAYED
            WHERE EXISTS (SELECT FROM dead_letters WHERE status = :REPLAYED)
        )
        SELECT CAST(coalesce((SELECT json_agg("{key}") FROM latest), '[]') AS text),
               ARRAY(SELECT DISTINCT ingestion_id FROM done),
               ARRAY(SELECT raw_record_id FROM replays ORDER BY raw_record_id),
               ARRAY(SELECT key FROM replays ORDER BY raw_record_id),
               (SELECT count(*) FROM done)
        """
    )


def given_rows(record_type: RecordType) -> str:
    """SQL for the rows of the rows document ``:values`` (:func:`rows_document`), one column per
    :func:`row_columns`, typed as the table's."""
    if not _by_position(record_type):
        return objects_rows(record_type)
    columns = row_columns(record_type)
    read = ", ".join(f'{_element(i, record_type.table.c[c].type)} AS "{c}"' for i, c in enumerate(columns))
    return f"SELECT {read} FROM jsonb_array_elements(CAST(:values AS jsonb)) AS e"


def objects_rows(record_type: RecordType) -> str:
    """:func:`given_rows` for a document of flat objects, read by ``json_populate_recordset``
    against the table's row type (a type not read by position)."""
    quoted = ", ".join(f'"{c}"' for c in row_columns(record_type))
    return (
        f'SELECT {quoted} FROM json_populate_recordset(CAST(NULL AS "{record_type.table.name}"), CAST(:values AS json))'
    )


@cache
def _by_position(record_type: RecordType) -> bool:
    return all(_element(0, record_type.table.c[c].type) is not None for c in row_columns(record_type))


# Read by position with a cast to the column's own type (compiled); the text input is the one
# json_populate_recordset used. Integer includes its big and small kinds.
_CAST_TO_OWN_TYPE = (sa.Boolean, sa.Integer, sa.Numeric, sa.Float, sa.DateTime, sa.Date, sa.Time, sa.Interval, sa.Uuid)
_DIALECT = postgresql.dialect()


def _scalar(type_: sa.types.TypeEngine) -> str | None:
    """The SQL type a scalar JSON value of a column of ``type_`` is cast to, or None."""
    if isinstance(type_, sa.Enum):
        return None
    if type(type_) in (sa.String, sa.Text, sa.Unicode, sa.UnicodeText, postgresql.VARCHAR, postgresql.TEXT):
        return "text"  # the insert then refuses a value too long for varchar(n), as before; a cast would cut it
    if isinstance(type_, _CAST_TO_OWN_TYPE):
        return type_.compile(dialect=_DIALECT)
    return None


def _element(i: int, type_: sa.types.TypeEngine) -> str | None:
    """SQL for element ``i`` of the row ``e`` (jsonb) as a value of a column of ``type_``, or None
    when the type is not read by position (its rows are read as objects instead: a ``json``
    column keeps its text as sent, which jsonb does not)."""
    if isinstance(type_, postgresql.JSONB):
        return f"CASE WHEN jsonb_typeof(e -> {i}) = 'null' THEN NULL ELSE e -> {i} END"
    if isinstance(type_, sa.JSON):
        return None
    if isinstance(type_, sa.ARRAY):
        item = _scalar(type_.item_type)
        if item is None or type_.dimensions not in (None, 1):
            return None
        return (
            f"CASE WHEN jsonb_typeof(e -> {i}) = 'null' THEN NULL ELSE ARRAY(SELECT CAST(a.v AS {item}) "
            f"FROM jsonb_array_elements_text(e -> {i}) WITH ORDINALITY AS a(v, n) ORDER BY a.n) END"
        )
    scalar = _scalar(type_)
    return None if scalar is None else f"CAST(e ->> {i} AS {scalar})"


def _settle_replays(conn: sa.Connection, record_type: RecordType, ids: Sequence[int], keys: Sequence[str]) -> None:
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
        {"ids": list(ids), "keys": list(keys)},
    )


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
            f"AND r.waiting_on = ANY({json_array('refs')}) ORDER BY r.id FOR UPDATE"
        ),
        {"refs": json_list(parent_refs(record_type.name, keys))},
    )
    out: dict[str, list[int]] = {}
    for raw_id, type_name in rows:
        out.setdefault(type_name, []).append(raw_id)
    return out
