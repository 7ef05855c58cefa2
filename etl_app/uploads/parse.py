"""Reading a stored upload into the pipeline, in slices that resume where the last one stopped.

One call of the parse task (:func:`parse_slice`) reads up to ``SLICE_CHUNKS`` chunks of
``ETL_CHUNK_SIZE`` rows (more for xlsx and JSON arrays: ``SLICE_CHUNKS_BY_FORMAT``). Each chunk
is one transaction: the accepted rows go to the outbox (``raw_records``, with their row in
``source_row``), the refused ones to ``rejections``, the ingestion's counts move on, and the
upload's ``rows_read`` and ``checkpoint`` advance, but only if ``rows_read`` is still what this
call read at its start. So a worker killed mid-file (its task delivered again) or a second
parser sent by the sweeper starts from the last committed chunk: no row is lost and none is
stored twice; a parser that finds it was overtaken stops. After its commit, a chunk is sent down
the pipeline with its validated values (as a large API batch is). The next slice is sent at the
end of the queue, behind the chunks just sent, so a file is read no faster than the workers take
its records in.

A file that turns out to be unreadable part-way (a corrupt row group, a truncated sheet), or that
passes ``ETL_UPLOAD_MAX_ROWS`` rows or ``ETL_UPLOAD_MAX_DECODED_BYTES`` of values, makes the
upload ``failed`` with the error and the row it reached; the rows before it stay and go on. A
chunk also ends once its rows' values add up to ``CHUNK_BYTES``, so that a slice holds a few
MiB of values at a time, whatever the rows hold.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from etl_app.clock import utcnow
from etl_app.config import Settings
from etl_app.ingest import outbox
from etl_app.ingest.rejections import DEFAULT_LIMITS, Refused, RejectionLimits, store_rejections
from etl_app.ingest.send import Publisher, send_after_commit
from etl_app.models import FAILED, PARSED, PARSING, sql
from etl_app.pipeline.stash import Item, item
from etl_app.quality.settle import settle
from etl_app.record_types import RecordType, Registry
from etl_app.uploads import flat
from etl_app.uploads.formats import FileRefused, Limits, Row, read_rows
from etl_app.uploads.reader import open_upload

log = logging.getLogger(__name__)

SLICE_CHUNKS = 20
CHUNK_BYTES = 16 * 1024 * 1024
# Formats a slice resumes at a cost (xlsx: the sheet's XML is inflated again up to the
# checkpoint, not parsed; a JSON array: the items before it are parsed and skipped) take longer
# slices.
SLICE_CHUNKS_BY_FORMAT = {"xlsx": 200, "json": 200}
FLAT_FORMATS = ("csv", "tsv", "xlsx", "parquet")

# The outcome of one slice.
MORE = "more"  # read its share; the next slice goes on
DONE = "done"  # the whole file is read (or it failed, or it was read already)
OVERTAKEN = "overtaken"  # another parser committed first: this one stops
WAITING = "waiting"  # the pipeline's queue is long: the slice is sent again a moment later


@dataclass
class Upload:
    id: uuid.UUID
    record_type: str
    format: str
    size: int
    chunk_bytes: int
    status: str
    rows_read: int
    checkpoint: dict[str, Any]
    received_at: Any


_LOAD = sa.text(
    "SELECT u.id, u.record_type, u.format, u.size, u.chunk_bytes, u.status, u.rows_read, u.checkpoint, "
    "i.created_at AS received_at FROM uploads u JOIN ingestions i ON i.id = u.id WHERE u.id = :id"
)
_TAKE = sql(
    "UPDATE uploads SET status = :PARSING, leased_at = now() "
    "WHERE id = :id AND status IN (:STORED, :PARSING) AND rows_read = :rows_read"
)
_ADVANCE = sql(
    "UPDATE uploads SET rows_read = :rows_read, checkpoint = CAST(:checkpoint AS jsonb), progress = :progress, "
    "leased_at = now(), status = :status, parsed_at = CASE WHEN :status = :PARSED THEN now() END "
    "WHERE id = :id AND rows_read = :was AND status = :PARSING"
)
_FAIL = sql(
    "UPDATE uploads SET status = :FAILED, error = :error, parsed_at = now() "
    "WHERE id = :id AND rows_read = :was AND status IN (:STORED, :PARSING)"
)
_RENEW = sql("UPDATE uploads SET leased_at = now() WHERE id = :id AND status IN (:STORED, :PARSING)")
_COUNT = sa.text(
    "UPDATE ingestions SET accepted = accepted + :accepted, rejected = rejected + :rejected WHERE id = :id"
)


def load(conn: sa.Connection, upload_id: uuid.UUID) -> Upload | None:
    row = conn.execute(_LOAD, {"id": upload_id}).mappings().first()
    return Upload(**row) if row else None


def renew_lease(conn: sa.Connection, upload_id: uuid.UUID) -> bool:
    """The upload's parse is alive (it waits for the pipeline); False once it is read or failed."""
    return bool(conn.execute(_RENEW, {"id": upload_id}).rowcount)


def mark_failed(conn: sa.Connection, upload: Upload, error: str) -> bool:
    """The upload failed at its current row (the rows before it stay); False if overtaken."""
    params = {"error": error[:2000], "id": upload.id, "was": upload.rows_read}
    return bool(conn.execute(_FAIL, params).rowcount)


def _payload(record_type: RecordType, fmt: str, values: Any) -> Any:
    return flat.coerce(record_type, values) if fmt in FLAT_FORMATS else values


def parse_slice(
    publisher: Publisher,
    registry: Registry,
    conn: sa.Connection,
    upload_id: uuid.UUID,
    *,
    commit: Callable[[], None],
    after_commit: Callable[[Callable[[], Any]], None],
    limits: Limits,
    slice_chunks: int | None = None,
    rejection_limits: RejectionLimits = DEFAULT_LIMITS,
) -> str:
    """Read the next slice of an upload through ``conn`` (the task's transaction: ``commit()``
    after each chunk, ``after_commit(send)`` to send its chain) with the readers' caps
    (:func:`etl_app.uploads.caps.upload_limits`). Returns MORE, DONE or OVERTAKEN."""
    upload = load(conn, upload_id)
    if upload is None or upload.status in (PARSED, FAILED):
        return DONE
    record_type = registry[upload.record_type]
    taken = conn.execute(_TAKE, {"id": upload.id, "rows_read": upload.rows_read}).rowcount
    commit()
    if not taken:
        return OVERTAKEN
    chunk_size = publisher.chunk_size
    with publisher.engine.connect() as file_conn:
        f = open_upload(file_conn, upload.id, upload.size, upload.chunk_bytes)
        rows = read_rows(f, upload.format, checkpoint=upload.checkpoint or None, limits=limits, size=upload.size)
        for _ in range(slice_chunks or SLICE_CHUNKS_BY_FORMAT.get(upload.format, SLICE_CHUNKS)):
            batch, last, refusal = _next_chunk(rows, chunk_size)
            stored = _store_chunk(
                publisher,
                conn,
                record_type,
                upload,
                batch,
                last=last and refusal is None,
                after_commit=after_commit,
                limits=rejection_limits,
            )
            if not stored:
                return OVERTAKEN
            if refusal is not None:  # the rows before it are stored: the upload fails at the next one
                if not mark_failed(conn, upload, f"{refusal.message}"):
                    return OVERTAKEN
                commit()
                log.warning("upload %s failed after %d rows: %s", upload.id, upload.rows_read, refusal.message)
                return DONE
            commit()
            if last:
                log.info("upload %s read: %d rows", upload.id, upload.rows_read)
                return DONE
    return MORE


def _next_chunk(rows: Iterator[tuple[Row, dict]], chunk_size: int) -> tuple[list, bool, FileRefused | None]:
    """``(rows, last, refusal)``: up to ``chunk_size`` rows, fewer once their values add up to
    ``CHUNK_BYTES``; ``last`` when the file ended, ``refusal`` when the reader refused the rest."""
    batch: list[tuple[Row, dict]] = []
    size = 0
    try:
        for pair in rows:
            batch.append(pair)
            size += pair[0].size
            if len(batch) >= chunk_size or size >= CHUNK_BYTES:
                return batch, False, None
    except FileRefused as exc:
        return batch, True, exc
    return batch, True, None


def _store_chunk(
    publisher: Publisher,
    conn: sa.Connection,
    record_type: RecordType,
    upload: Upload,
    batch: list,
    *,
    last: bool,
    after_commit: Callable[[Callable[[], Any]], None],
    limits: RejectionLimits = DEFAULT_LIMITS,
) -> bool:
    """One chunk in the task's transaction; False if another parser got there first."""
    was = upload.rows_read
    checkpoint = batch[-1][1] if batch else upload.checkpoint
    rows_read = was + len(batch)
    advanced = conn.execute(
        _ADVANCE,
        {
            "rows_read": rows_read,
            "checkpoint": orjson.dumps(checkpoint).decode(),
            "progress": 1.0 if last else float(checkpoint.get("progress", 0.0)),
            "status": PARSED if last else PARSING,
            "id": upload.id,
            "was": was,
        },
    ).rowcount
    if not advanced:
        return False
    accepted: list[tuple[int, Any, dict]] = []
    refused: list[Refused] = []
    for row, _ in batch:
        if row.errors:
            refused.append({"index": row.number, "errors": row.errors, "raw": row.raw})
            continue
        payload = _payload(record_type, upload.format, row.values)
        data, errors = record_type.validate(payload, upload.received_at)
        if errors:
            refused.append({"index": row.number, "errors": errors, "raw": row.raw, "payload": payload})
        else:
            accepted.append((row.number, payload, data))
    now = utcnow()
    ids = outbox.new_ids(conn, len(accepted)) if accepted else []
    if accepted:
        outbox.copy_records(
            conn,
            ids,
            upload.id,
            record_type,
            [p for _, p, _ in accepted],
            received_at=upload.received_at,
            enqueued_at=now,
            source_rows=[n for n, _, _ in accepted],
        )
    store_rejections(conn, upload.id, record_type, refused, now, limits)
    if accepted or refused:
        conn.execute(_COUNT, {"accepted": len(accepted), "rejected": len(refused), "id": upload.id})
    upload.rows_read, upload.checkpoint = rows_read, checkpoint
    if accepted:
        ingestion = str(upload.id)  # once, not once per record
        items: list[Item] = [
            item(raw_id, ingestion, upload.received_at, None, data)
            for raw_id, (_, _, data) in zip(ids, accepted, strict=True)
        ]
        after_commit(lambda: _send(publisher, record_type, ids, items))
    return True


def _send(publisher: Publisher, record_type: RecordType, ids: list[int], items: list[Item]) -> None:
    send_after_commit(
        publisher,
        {record_type.name: ids},
        items=items,
        timeout=None,
        what=f"upload chunk of {len(ids)} records",
    )


def after_parse(engine: sa.Engine, registry: Registry, settings: Settings, upload_id: uuid.UUID) -> None:
    """The file is read (or failed): its ingestion may be settled already (every row refused, or
    every record through the pipeline before the last slice ended)."""
    try:
        settle(engine, [upload_id], registry=registry, settings=settings)
    except Exception as exc:  # noqa: BLE001 - the sweeper settles it later
        log.warning("upload %s: could not settle its ingestion now: %s", upload_id, exc)
