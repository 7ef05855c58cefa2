"""Replaying and discarding dead letters.

A replay happens in one transaction: the raw record goes back to ``received`` (with a corrected
payload if one was given), the dead letter becomes ``replayed`` (``replay_count`` + 1,
``last_replayed_at``, ``last_outcome = 'replayed'``) and its ingestion is open again: its
``quality`` and ``finished_at`` are cleared, so it reports ``running`` and is measured again
(:mod:`etl_app.quality.settle`) once the replayed records settle. Only after
the commit are the chains sent, with :func:`etl_app.ingest.send.send_after_commit` (pass it
``Replayed.records``); if the broker cannot take them, the records stay ``received`` and the
relay or the outbox sweeper sends them. When the record settles, ``last_outcome`` becomes
``persisted``, or ``dead`` (the row is open again), or, when a later record of its key is stored
and keeps the table, the dead letter becomes ``superseded`` with ``superseded_by`` naming that
record (:func:`etl_app.pipeline.persist.persist_chunk`). Children dead-lettered as
``missing_parent`` are replayed automatically when their parent lands.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from etl_app.dead_letters.errors import InvalidParameter, InvalidPayload, KeyChanged, NotFound, NotOpen
from etl_app.dead_letters.filters import Filters
from etl_app.dead_letters.queries import DEAD_LETTERS, MAX_ID, RAW_RECORDS
from etl_app.ingest.send import Publisher, Wakeable, send_after_commit
from etl_app.models import DEAD, DISCARDED, OPEN, json_array, json_list, sql
from etl_app.pipeline.enrich import parent_refs, split_parent_ref
from etl_app.record_types import Registry

REPLAY_CAP = 10_000  # dead letters replayed by one bulk call at most


@dataclass
class Replayed:
    """What a replay sent back into the pipeline: raw record ids by record type."""

    records: dict[str, list[int]] = field(default_factory=dict)
    dead_letter_ids: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.dead_letter_ids)

    @property
    def raw_ids(self) -> list[int]:
        return sorted(i for ids in self.records.values() for i in ids)


def _replay_sql(picked: str) -> sa.TextClause:
    """Replay the dead letters ``picked`` selects (columns id, raw_record_id; open ones whose raw
    record is dead, locked by this transaction) in one statement.

    Every ingestion of a replayed record is reopened, whether its report is stored yet or not: the
    update waits for a settler that holds the ingestion's row (it measured the ingestion while the
    record was still dead and is storing its report), then clears what that settler stored. Reopening
    only the ingestions already finished let such a settler finish the ingestion after the replay,
    with the replayed record in flight, and the replayed record's own settle found it finished."""
    return sql(
        f"""
        WITH picked AS ({picked}),
        dl AS (
            UPDATE dead_letters d SET status = :REPLAYED, replay_count = d.replay_count + 1,
                last_replayed_at = now(), last_outcome = :REPLAYED
            FROM picked WHERE d.id = picked.id AND d.status = :OPEN
            RETURNING d.id, d.raw_record_id
        ), raw AS (
            UPDATE raw_records r SET status = :RECEIVED, waiting_on = NULL, waiting_since = NULL,
                last_error = NULL, enqueued_at = now(), updated_at = now()
            FROM dl WHERE r.id = dl.raw_record_id AND r.status = :DEAD
            RETURNING r.id, r.record_type, r.ingestion_id
        ), reopened AS (
            UPDATE ingestions i SET finished_at = NULL, quality = NULL
            WHERE i.id IN (SELECT ingestion_id FROM raw)
        )
        SELECT dl.id, raw.id AS raw_id, raw.record_type FROM dl JOIN raw ON raw.id = dl.raw_record_id
        ORDER BY raw.id
        """
    )


_REPLAY_IDS = _replay_sql("SELECT id, raw_record_id FROM dead_letters WHERE id = ANY(:ids)")


def _collect(rows: Iterable[sa.Row]) -> Replayed:
    out = Replayed()
    for dl_id, raw_id, type_name in rows:
        out.dead_letter_ids.append(dl_id)
        out.records.setdefault(type_name, []).append(raw_id)
    return out


def _replay_ids(conn: sa.Connection, dead_letter_ids: Sequence[int]) -> Replayed:
    if not dead_letter_ids:
        return Replayed()
    return _collect(conn.execute(_REPLAY_IDS, {"ids": list(dead_letter_ids)}))


UNSET: Any = object()  # no corrected payload (None would be one, and validation refuses it)


def replay(
    conn: sa.Connection, registry: Registry, dead_letter_id: int, payload: Any = UNSET, *, keep_key: bool = False
) -> Replayed:
    """Replay one open dead letter, optionally with a corrected ``payload``, which must pass
    ``RecordType.validate`` as of the record's ``received_at`` (else :class:`InvalidPayload`,
    nothing changed). With ``keep_key`` (a caller without the submit right), the payload must also
    keep the natural key of the record it corrects: the same value of the record type's key field
    (else :class:`KeyChanged`, nothing changed). Raises :class:`NotFound` or :class:`NotOpen`."""
    if not 0 < dead_letter_id <= MAX_ID:
        raise NotFound(dead_letter_id)
    row = conn.execute(
        sa.select(
            DEAD_LETTERS.c.id,
            DEAD_LETTERS.c.status,
            DEAD_LETTERS.c.record_type,
            RAW_RECORDS.c.id.label("raw_id"),
            RAW_RECORDS.c.status.label("record_status"),
            RAW_RECORDS.c.received_at,
            RAW_RECORDS.c.payload.label("record_payload"),
        )
        .select_from(DEAD_LETTERS.join(RAW_RECORDS, RAW_RECORDS.c.id == DEAD_LETTERS.c.raw_record_id))
        .where(DEAD_LETTERS.c.id == dead_letter_id)
        .with_for_update(of=[DEAD_LETTERS, RAW_RECORDS])
    ).first()
    if row is None:
        raise NotFound(dead_letter_id)
    if row.status != OPEN or row.record_status != DEAD:
        raise NotOpen(dead_letter_id, row.status, row.record_status)
    if payload is not UNSET:
        record_type = registry.get(row.record_type)
        if record_type is None:
            raise InvalidPayload({"_schema": [f"record type {row.record_type!r} is not registered"]})
        if keep_key:
            refuse_key_change(record_type.key, row.record_payload, payload)
        _, field_errors = record_type.validate(payload, row.received_at)
        if field_errors:
            raise InvalidPayload(field_errors)
        conn.execute(
            sa.text("UPDATE raw_records SET payload = CAST(:payload AS jsonb), natural_key = :key WHERE id = :id"),
            {"payload": orjson.dumps(payload).decode(), "key": record_type.natural_key(payload), "id": row.raw_id},
        )
    return _replay_ids(conn, [row.id])


def _key_value(payload: Any, field: str) -> Any:
    return payload.get(field) if isinstance(payload, dict) else None


def refuse_key_change(field: str, original: Any, corrected: Any) -> None:
    """:class:`KeyChanged` unless ``corrected`` holds the very value of ``field`` that ``original``
    holds (compared as JSON values: ``"T1"`` and ``" T1"`` differ, as do a missing key and any
    key). A payload that is no object is left to validation."""
    if not isinstance(corrected, dict):
        return
    before, after = _key_value(original, field), _key_value(corrected, field)
    if field not in corrected or not isinstance(original, dict) or field not in original or before != after:
        raise KeyChanged(field, before, after)


def replay_matching(conn: sa.Connection, filters: Filters, *, cap: int = REPLAY_CAP) -> tuple[Replayed, int]:
    """Replay up to ``cap`` open dead letters matching ``filters`` (oldest first; rows another
    transaction holds are skipped). Returns what was replayed and how many matching ones stay open."""
    if filters.status != OPEN:
        raise InvalidParameter("status", "only open dead letters can be replayed")
    picked = (
        sa.select(DEAD_LETTERS.c.id)
        .select_from(DEAD_LETTERS.join(RAW_RECORDS, RAW_RECORDS.c.id == DEAD_LETTERS.c.raw_record_id))
        .where(*filters.where(), RAW_RECORDS.c.status == DEAD)
        .order_by(DEAD_LETTERS.c.id)
        .limit(cap)
        .with_for_update(of=[DEAD_LETTERS, RAW_RECORDS], skip_locked=True)
    )
    ids = list(conn.execute(picked).scalars())
    replayed = _replay_ids(conn, ids)
    return replayed, count_matching(conn, filters)


def count_replayable(conn: sa.Connection, filters: Filters, *, cap: int = REPLAY_CAP) -> tuple[int, int]:
    """What :func:`replay_matching` would do now, changing and locking nothing: how many it would
    replay and how many matching ones would stay open."""
    if filters.status != OPEN:
        raise InvalidParameter("status", "only open dead letters can be replayed")
    replayable = conn.execute(
        sa.select(sa.func.count())
        .select_from(DEAD_LETTERS.join(RAW_RECORDS, RAW_RECORDS.c.id == DEAD_LETTERS.c.raw_record_id))
        .where(*filters.where(), RAW_RECORDS.c.status == DEAD)
    ).scalar_one()
    would = min(replayable, cap)
    return would, count_matching(conn, filters) - would


def count_matching(conn: sa.Connection, filters: Filters) -> int:
    """How many dead letters match ``filters``."""
    return conn.execute(sa.select(sa.func.count()).select_from(DEAD_LETTERS).where(*filters.where())).scalar_one()


_REPLAY_CHILDREN = _replay_sql(
    "SELECT d.id, d.raw_record_id FROM raw_records r JOIN dead_letters d ON d.raw_record_id = r.id "
    f"WHERE r.status = :DEAD AND r.waiting_on = ANY({json_array('refs')}) AND d.status = :OPEN "
    "AND d.error_type = :MISSING_PARENT ORDER BY r.id FOR UPDATE OF r, d"
)


def replay_children(conn: sa.Connection, parent_type: str, keys: Sequence[str]) -> Replayed:
    """Replay the open ``missing_parent`` dead letters that waited for one of these parents (just
    persisted, in the caller's transaction): one statement. Discarded ones stay discarded."""
    if not keys:
        return Replayed()
    return _collect(conn.execute(_REPLAY_CHILDREN, {"refs": json_list(parent_refs(parent_type, keys))}))


_DEAD_ORPHANS = sql(
    "SELECT d.id, r.waiting_on FROM raw_records r JOIN dead_letters d ON d.raw_record_id = r.id "
    "WHERE r.id = ANY(:ids) AND r.status = :DEAD AND r.waiting_on IS NOT NULL "
    "AND d.status = :OPEN AND d.error_type = :MISSING_PARENT"
)


def replay_if_parents_exist(conn: sa.Connection, registry: Registry, raw_ids: Sequence[int]) -> Replayed:
    """Of these raw records, replay the open ``missing_parent`` dead letters whose parent is stored
    by now (it landed while they were being dead-lettered). One query per parent type."""
    if not raw_ids:
        return Replayed()
    rows = conn.execute(_DEAD_ORPHANS, {"ids": list(raw_ids)}).all()
    wanted: dict[str, dict[str, list[int]]] = {}
    for dl_id, ref in rows:
        parent_type, key = split_parent_ref(ref)
        wanted.setdefault(parent_type, {}).setdefault(key, []).append(dl_id)
    due: list[int] = []
    for parent_type, by_key in wanted.items():
        parent = registry.get(parent_type)
        if parent is None:
            continue
        key_col = parent.table.c[parent.key]
        for key in conn.execute(sa.select(key_col).where(key_col.in_(sorted(by_key)))).scalars():
            due.extend(by_key[key])
    return _replay_ids(conn, sorted(due))


def discard(conn: sa.Connection, dead_letter_id: int) -> dict[str, Any]:
    """Mark an open dead letter discarded (its raw record stays ``dead``); discarding a discarded
    one again changes nothing. Raises :class:`NotFound`, or :class:`NotOpen` for a replayed or
    superseded one."""
    if not 0 < dead_letter_id <= MAX_ID:
        raise NotFound(dead_letter_id)
    row = conn.execute(
        sa.select(DEAD_LETTERS.c.id, DEAD_LETTERS.c.status, RAW_RECORDS.c.status.label("record_status"))
        .select_from(DEAD_LETTERS.outerjoin(RAW_RECORDS, RAW_RECORDS.c.id == DEAD_LETTERS.c.raw_record_id))
        .where(DEAD_LETTERS.c.id == dead_letter_id)
        .with_for_update(of=DEAD_LETTERS)
    ).first()
    if row is None:
        raise NotFound(dead_letter_id)
    if row.status not in (OPEN, DISCARDED):
        raise NotOpen(dead_letter_id, row.status, row.record_status)
    conn.execute(sa.update(DEAD_LETTERS).where(DEAD_LETTERS.c.id == dead_letter_id).values(status=DISCARDED))
    return {"dead_letter_id": dead_letter_id, "status": DISCARDED, "record_status": row.record_status}


def discard_matching(conn: sa.Connection, filters: Filters) -> list[int]:
    """Discard every open dead letter matching ``filters`` in one statement (their raw records stay
    ``dead``; rows another transaction holds, a replay most likely, are skipped). Returns their ids."""
    if filters.status != OPEN:
        raise InvalidParameter("status", "only open dead letters can be discarded")
    picked = (
        sa.select(DEAD_LETTERS.c.id)
        .where(*filters.where())
        .with_for_update(of=DEAD_LETTERS, skip_locked=True)
        .scalar_subquery()
    )
    rows = conn.execute(
        sa.update(DEAD_LETTERS)
        .where(DEAD_LETTERS.c.id.in_(picked), DEAD_LETTERS.c.status == OPEN)
        .values(status=DISCARDED)
        .returning(DEAD_LETTERS.c.id)
    )
    return sorted(rows.scalars())


def send_replayed(publisher: Publisher, replayed: Replayed, *, relay: Wakeable | None = None) -> bool:
    """Send the replayed records' chains, after the commit, within the publisher's deadline; what
    the broker does not take now is flagged unpublished, and ``relay`` (a web process's) retries
    it until the broker takes it. True once the broker took them all."""
    return send_after_commit(
        publisher, replayed.records, timeout=publisher.timeout, what="replayed dead letters", relay=relay
    )
