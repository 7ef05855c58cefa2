"""The outbox: accepted records are committed to raw_records before the API answers."""

from __future__ import annotations

import struct
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
import psycopg
import sqlalchemy as sa

from etl_app.ingest import idempotency
from etl_app.ingest.group_commit import PerProcess
from etl_app.ingest.idempotency import Claim, KeyTaken
from etl_app.ingest.rejections import DEFAULT_LIMITS, Refused, RejectionLimits, store_rejections
from etl_app.models import RECEIVED, sql
from etl_app.record_types import RecordType


@dataclass
class Accepted:
    """The outcome of one ingest call: its ingestion and the raw-record ids stored, in order."""

    ingestion_id: uuid.UUID
    ids: list[int] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.ids)


_T = TypeVar("_T")


def _jsonb(value: Any) -> str:
    return orjson.dumps(value).decode()


# Below this many records one INSERT … SELECT FROM unnest(…) beats COPY's extra round trips.
COPY_THRESHOLD = 64

_INGESTION = (
    "INSERT INTO ingestions (id, record_type, source, accepted, rejected, created_at) "
    "VALUES (:id, :t, :source, :accepted, :rejected, :at)"
)
_RAW_SMALL = (
    "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, status, received_at, updated_at, "
    "enqueued_at) SELECT :id, :t, r.key, r.payload, :RECEIVED, :at, :at, :enqueued_at "
    "FROM unnest(CAST(:keys AS text[]), CAST(:payloads AS jsonb[])) WITH ORDINALITY AS r(key, payload, n) "
    "ORDER BY r.n RETURNING id"
)
# The new ids as one array, in ascending order: one value to read instead of a row per id (about
# 0.7 ms of the web's CPU for 1,000 ids as rows, 0.2 as an array). The sequence is looked up once,
# in a sub-select PostgreSQL runs before the rows (an InitPlan): as nextval's argument directly,
# pg_get_serial_sequence ran once per id, ~6 of the ~8 ms PostgreSQL spent on 1,000 ids.
_IDS = (
    "SELECT array_agg(n.id ORDER BY n.id) FROM (SELECT nextval((SELECT CAST(pg_get_serial_sequence('raw_records', "
    "'id') AS regclass))) AS id FROM generate_series(1, :accepted)) AS n"
)
# The ingestion's row and its records in one statement; with rejections its row comes first, alone.
_STORE_SMALL = sql(f"WITH ingestion AS ({_INGESTION}) {_RAW_SMALL}")
_STORE_IDS = sa.text(f"WITH ingestion AS ({_INGESTION}) {_IDS}")
_ONLY_RAW_SMALL = sql(_RAW_SMALL)
_ONLY_IDS = sa.text(_IDS)


# One record: the same statement with plain parameters (no arrays to render), run on the driver's
# connection, where psycopg prepares it once per connection. Through SQLAlchemy the single record
# cost about 1 ms of CPU more in the web process (text() with inline values compiled at each
# execution, the text[] and jsonb[] arrays rendered and escaped, the result wrapped).
_STORE_ONE = (
    "WITH ingestion AS (INSERT INTO ingestions (id, record_type, source, accepted, rejected, created_at) "
    "VALUES (%(id)s, %(t)s, %(source)s, 1, 0, %(at)s)) "
    "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, status, received_at, updated_at, "
    f"enqueued_at) VALUES (%(id)s, %(t)s, %(key)s, %(payload)s::jsonb, '{RECEIVED}', %(at)s, %(at)s, "
    "%(enqueued_at)s) RETURNING id"
)
# ... and with an idempotency key: its claim first, the ingestion and the record only if the claim
# took the key (one statement still, atomic in autocommit; no row back: the key was taken).
_STORE_ONE_CLAIMED = (
    f"WITH claim AS ({idempotency.CLAIM_INSERT}), "
    "ingestion AS (INSERT INTO ingestions (id, record_type, source, accepted, rejected, created_at) "
    "SELECT %(id)s, %(t)s, %(source)s, 1, 0, %(at)s FROM claim) "
    "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, status, received_at, updated_at, "
    f"enqueued_at) SELECT %(id)s, %(t)s, %(key)s, %(payload)s::jsonb, '{RECEIVED}', %(at)s, %(at)s, "
    "%(enqueued_at)s FROM claim RETURNING id"
)


def store_and_commit(engine: sa.Engine, record_type: RecordType, payloads: Sequence[Any], **kwargs: Any) -> Accepted:
    """:func:`store` and commit. A few records are one statement, which commits by itself
    (autocommit: no BEGIN and COMMIT round trips); a single record shares its statement with the
    single records of this process's other requests of the moment (:func:`_store_one`); more
    records, or any with rejections, or any with an idempotency key's ``claim`` but a single
    record, are a transaction. Raises
    :class:`~etl_app.ingest.idempotency.KeyTaken` (nothing stored) when the claim's key has an
    answer already."""
    if len(payloads) == 1 and not kwargs.get("rejections"):
        return _store_one(engine, record_type, payloads[0], **kwargs)
    if len(payloads) < COPY_THRESHOLD and not kwargs.get("rejections") and kwargs.get("claim") is None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return store(conn, record_type, payloads, **kwargs)
    with engine.begin() as conn:
        return store(conn, record_type, payloads, **kwargs)


def _store_one(
    engine: sa.Engine,
    record_type: RecordType,
    payload: Any,
    *,
    source: str,
    received_at: datetime,
    rejections: Sequence[Refused] = (),
    rejection_limits: RejectionLimits = DEFAULT_LIMITS,
    relayed: bool = False,
    claim: Claim | None = None,
) -> Accepted:
    """One record and its ingestion row in one autocommitted statement: without a key, with the
    other single records this process is storing at the same moment (:func:`_write_group`); with
    a key's claim, alone (:data:`_STORE_ONE_CLAIMED`). A connection that fails it is thrown away
    (psycopg's error is the caller's: a 503 in the API)."""
    del rejections, rejection_limits  # none: the caller checked
    ingestion_id = claim.ingestion_id if claim is not None else uuid.uuid4()
    params = {
        "id": ingestion_id,
        "t": record_type.name,
        "source": source,
        "at": received_at,
        "key": record_type.natural_key(payload),
        "payload": _jsonb(payload),
        "enqueued_at": None if relayed else received_at,
    }
    if claim is None:
        return Accepted(ingestion_id, [_group_of(engine).submit(params)])
    params.update(claim.params())
    row = _on_driver(engine, lambda conn: conn.execute(_STORE_ONE_CLAIMED, params, prepare=True).fetchone())
    if row is None:  # the claim did not take the key
        raise KeyTaken(claim.key)
    return Accepted(ingestion_id, [row[0]])


def _on_driver(engine: sa.Engine, work: Callable[[psycopg.Connection], _T]) -> _T:
    """``work`` on a pooled connection's driver connection in autocommit (each statement its own
    transaction, no BEGIN and COMMIT round trips). A connection that fails is thrown away."""
    pooled = engine.raw_connection()
    try:
        conn: psycopg.Connection = pooled.driver_connection  # type: ignore[assignment]
        conn.autocommit = True
        try:
            return work(conn)
        finally:
            if not (conn.closed or conn.broken):
                conn.autocommit = False
    except psycopg.Error as exc:
        if conn.closed or conn.broken:
            pooled.invalidate(exc)
        raise
    finally:
        pooled.close()


# Several single records (of any record types), each with its ingestion row, in one statement:
# the arrays hold one element per record; each id comes back beside its record's ingestion id.
_STORE_GROUP = (
    "WITH ingestion AS (INSERT INTO ingestions (id, record_type, source, accepted, rejected, created_at) "
    "SELECT r.id, r.t, r.source, 1, 0, r.at FROM unnest(%(id)s::uuid[], %(t)s::text[], %(source)s::text[], "
    "%(at)s::timestamptz[]) AS r(id, t, source, at)) "
    "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, status, received_at, updated_at, "
    f"enqueued_at) SELECT r.id, r.t, r.key, r.payload, '{RECEIVED}', r.at, r.at, r.enqueued_at "
    "FROM unnest(%(id)s::uuid[], %(t)s::text[], %(at)s::timestamptz[], %(key)s::text[], %(payload)s::jsonb[], "
    "%(enqueued_at)s::timestamptz[]) WITH ORDINALITY AS r(id, t, at, key, payload, enqueued_at, n) "
    "ORDER BY r.n RETURNING ingestion_id, id"
)
_GROUP_FIELDS = ("id", "t", "source", "at", "key", "payload", "enqueued_at")


def _write_group(engine: sa.Engine, group: Sequence[dict[str, Any]]) -> list[int | Exception]:
    """Store single records (the params of :data:`_STORE_ONE`), one statement for all of them;
    each record's raw id, or its error. A statement refused on a good connection stored nothing:
    each record is then stored alone, so that only a record PostgreSQL refuses fails. A failed
    connection fails them all (see :mod:`etl_app.ingest.group_commit`)."""

    def write(conn: psycopg.Connection) -> list[int | Exception]:
        if len(group) == 1:
            return [conn.execute(_STORE_ONE, group[0], prepare=True).fetchone()[0]]  # type: ignore[index]
        arrays = {name: [params[name] for params in group] for name in _GROUP_FIELDS}
        try:
            # each request's record by its own ingestion (the order RETURNING gives is not a promise)
            ids = dict(conn.execute(_STORE_GROUP, arrays, prepare=True).fetchall())
            return [ids[params["id"]] for params in group]
        except psycopg.Error:
            if conn.closed or conn.broken:
                raise
        outcomes: list[int | Exception] = []
        for params in group:
            try:
                outcomes.append(conn.execute(_STORE_ONE, params, prepare=True).fetchone()[0])  # type: ignore[index]
            except psycopg.Error as exc:
                if conn.closed or conn.broken:
                    raise
                outcomes.append(exc)
        return outcomes

    return _on_driver(engine, write)


_groups: weakref.WeakKeyDictionary[sa.Engine, PerProcess[dict[str, Any], int]] = weakref.WeakKeyDictionary()
_groups_lock = threading.Lock()


def _group_of(engine: sa.Engine) -> PerProcess[dict[str, Any], int]:
    """The engine's :class:`~etl_app.ingest.group_commit.GroupCommit` of single records."""
    group = _groups.get(engine)
    if group is None:
        with _groups_lock:
            group = _groups.get(engine)
            if group is None:
                ref = weakref.ref(engine)
                group = _groups[engine] = PerProcess(lambda items: _write_group(ref(), items))  # type: ignore[arg-type]
    return group


def store(
    conn: sa.Connection,
    record_type: RecordType,
    payloads: Sequence[Any],
    *,
    source: str,
    received_at: datetime,
    rejections: Sequence[Refused],
    rejection_limits: RejectionLimits = DEFAULT_LIMITS,
    relayed: bool = False,
    claim: Claim | None = None,
) -> Accepted:
    """Write the ingestion row and every accepted payload in the caller's transaction: one
    statement for a few records, COPY for more; the refused records go to ``rejections``.

    ``relayed``: leave ``enqueued_at`` unset, for the outbox relay to publish (small
    submissions); otherwise the caller publishes right after the commit. ``claim``: an
    idempotency key's, written first (:func:`etl_app.ingest.idempotency.claim`: KeyTaken, and
    the caller rolls back, when the key has an answer already)."""
    if claim is not None:
        idempotency.claim(conn, claim)
    ingestion_id = claim.ingestion_id if claim is not None else uuid.uuid4()
    params = {
        "id": ingestion_id,
        "t": record_type.name,
        "source": source,
        "accepted": len(payloads),
        "rejected": len(rejections),
        "at": received_at,
    }
    result = Accepted(ingestion_id)
    if rejections:
        conn.execute(sa.text(_INGESTION), params)
        store_rejections(conn, ingestion_id, record_type, rejections, received_at, rejection_limits)
        if not payloads:
            return result
    enqueued_at = None if relayed else received_at
    if len(payloads) < COPY_THRESHOLD:
        params.update(
            keys=[record_type.natural_key(p) for p in payloads],
            payloads=[_jsonb(p) for p in payloads],
            enqueued_at=enqueued_at,
        )
        statement = _ONLY_RAW_SMALL if rejections else _STORE_SMALL
        result.ids = [r[0] for r in conn.execute(statement, params)]
        return result
    ids = conn.execute(_ONLY_IDS if rejections else _STORE_IDS, params).scalar_one()
    copy_records(conn, ids, ingestion_id, record_type, payloads, received_at=received_at, enqueued_at=enqueued_at)
    result.ids = ids
    return result


def new_ids(conn: sa.Connection, n: int) -> list[int]:
    """``n`` raw-record ids, in order, for :func:`copy_records`."""
    return conn.execute(_ONLY_IDS, {"accepted": n}).scalar_one() or []


def copy_records(
    conn: sa.Connection,
    ids: Sequence[int],
    ingestion_id: uuid.UUID,
    record_type: RecordType,
    payloads: Sequence[Any],
    *,
    received_at: datetime,
    enqueued_at: datetime | None,
    source_rows: Sequence[int] | None = None,
) -> None:
    """COPY accepted payloads into the outbox under the given ids, in the caller's transaction
    (``source_rows``: their rows in an uploaded file).

    The rows go in PostgreSQL's binary COPY format, built here as whole blocks of bytes
    (:func:`_binary_rows`): PostgreSQL then neither splits and unescapes text lines nor parses
    three timestamps, a uuid and an id per row, and the web process dumps the columns common to
    the batch once instead of once per row through the driver's per-row adaptation."""
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(_COPY) as copy:
        common = _common_fields(ingestion_id, record_type, received_at, enqueued_at)
        for block in _binary_rows(ids, payloads, record_type.natural_key, common, source_rows, _COPY_BLOCK):
            copy.write(block)


_COPY = (
    "COPY raw_records (id, natural_key, payload, ingestion_id, record_type, status, received_at, updated_at, "
    "enqueued_at, source_row) FROM STDIN (FORMAT BINARY)"
)
# Rows per block handed to the driver: bounds the memory a large upload's batch holds twice.
_COPY_BLOCK = 1000
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # the signature, no flags, no header extension
_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL's timestamps count microseconds from it
_ROW_HEAD = struct.Struct("!hiqi").pack  # 10 fields; the id (8 bytes); the natural key's length
_JSONB_HEAD = struct.Struct("!ib").pack  # the payload's length; jsonb's binary version, 1: its text follows
_INT8 = struct.Struct("!iq").pack  # an 8-byte field: its length, then a bigint (or a timestamp's microseconds)
_FIELD = struct.Struct("!i").pack


def _timestamptz(value: datetime | None) -> bytes:
    """A binary timestamptz field (a naive datetime is taken as UTC)."""
    if value is None:
        return _NULL
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return _INT8(8, (value - _EPOCH) // timedelta(microseconds=1))


def _text(value: str) -> bytes:
    data = value.encode()
    return _FIELD(len(data)) + data


def _common_fields(
    ingestion_id: uuid.UUID, record_type: RecordType, received_at: datetime, enqueued_at: datetime | None
) -> bytes:
    """The binary fields every row of a batch shares, encoded once: ingestion, record type,
    status, received_at, updated_at (the same time) and enqueued_at."""
    at = _timestamptz(received_at)
    return b"".join(
        (_FIELD(16) + ingestion_id.bytes, _text(record_type.name), _text(RECEIVED), at, at, _timestamptz(enqueued_at))
    )


def _binary_rows(
    ids: Sequence[int],
    payloads: Sequence[Any],
    natural_key: Callable[[Any], str | None],
    common: bytes,
    source_rows: Sequence[int] | None,
    block_rows: int,
) -> Iterator[bytes]:
    """The binary COPY stream of :data:`_COPY`, in blocks of ``block_rows`` rows: the signature
    first, the trailer last; each row its id, natural key and payload, then ``common``
    (:func:`_common_fields`), then its source row."""
    if len(ids) != len(payloads) or (source_rows is not None and len(source_rows) != len(ids)):
        raise ValueError("copy_records: ids, payloads and source_rows differ in length")
    dumps = orjson.dumps
    parts: list[bytes] = [_SIGNATURE]
    for n, (raw_id, payload) in enumerate(zip(ids, payloads, strict=True)):
        key = natural_key(payload)
        body = dumps(payload)
        if key is None:
            parts.append(_ROW_HEAD(10, 8, raw_id, -1))
        else:
            data = key.encode()
            parts.append(_ROW_HEAD(10, 8, raw_id, len(data)))
            parts.append(data)
        parts.append(_JSONB_HEAD(len(body) + 1, 1))
        parts.append(body)
        parts.append(common)
        parts.append(_NULL if source_rows is None else _INT8(8, source_rows[n]))
        if (n + 1) % block_rows == 0:
            yield b"".join(parts)
            parts = []
    parts.append(_TRAILER)
    yield b"".join(parts)
