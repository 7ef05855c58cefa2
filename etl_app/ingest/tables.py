"""The ingest domain's tables: ingestions, the outbox (raw_records) and the refused records
(rejections), with their statuses and indexes. Alembic finds them through :mod:`etl_app.models`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from etl_app.db import TSTZ, Base

# raw_records.status values. `received` until settled. `rejected` is counted and shown wherever
# statuses are, but no code path writes it any more: records refused by the API or by an upload's
# parser are kept in the `rejections` table instead, and never enter the outbox.
RECEIVED = "received"


PERSISTED = "persisted"


DEAD = "dead"


REJECTED = "rejected"


STATUSES = (RECEIVED, PERSISTED, DEAD, REJECTED)


# "Still ``received``" in the statements that find raw records by id (a chunk's) or by ingestion,
# for the named placeholders of etl_app.models.sql. Both spell ``status = 'received'`` so that
# PostgreSQL cannot prove from it the predicate of the partial index of unsettled records
# (ix_raw_records_unsettled), and never walks that index for them. Spelled ``= 'received'``, the
# planner walked it whenever its statistics held few unsettled records (a large table analysed
# before a backlog built up), testing every record of the backlog: at a backlog of 10,000,
# 70-110 ms a chunk of 1,000 in each of validate's read, persist's update and the lease refresh
# (1-4 ms by the primary key), 25-40 ms to dead-letter or mark waiting 50 records (1-8 ms), and
# 7 ms for each ingestion whose settling is checked (0.03 ms by the (ingestion_id, status) index).


def unsettled_by_id(column: str = "status") -> str:
    """None of the settled statuses (the check constraint allows no status but STATUSES): not
    indexable at all, so the records are found by the ids' index, the primary key."""
    settled = ", ".join(f":{status.upper()}" for status in STATUSES if status != RECEIVED)
    return f"{column} NOT IN ({settled})"


def unsettled_by_ingestion(column: str = "status") -> str:
    """A range of one value: with ``ingestion_id = …`` it is a condition of the
    ``(ingestion_id, status)`` index, which goes straight to the ingestion's received records."""
    return f"{column} BETWEEN :RECEIVED AND :RECEIVED"


class Ingestion(Base):
    """One API call (single, batch, NDJSON or upload) and what it was told."""

    __tablename__ = "ingestions"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    record_type: Mapped[str] = mapped_column(sa.Text)
    source: Mapped[str] = mapped_column(sa.Text)
    accepted: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    rejected: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    # Its rejections stored in full, and the ones after ETL_MAX_REJECTIONS_STORED, only counted
    # (etl_app.ingest.rejections); ``rejected`` counts both.
    rejections_stored: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    rejections_not_stored: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())
    finished_at: Mapped[datetime | None] = mapped_column(TSTZ)
    # The quality report (docs/quality.md), written when the ingestion settles; null while it runs.
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class RawRecord(Base):
    """The outbox: every accepted record as received, committed before the API answers."""

    __tablename__ = "raw_records"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {STATUSES!r}", name="status"),
        sa.Index("ix_raw_records_ingestion_id_status", "ingestion_id", "status"),
        sa.Index("ix_raw_records_unsettled", "enqueued_at", postgresql_where=sa.text(f"status = '{RECEIVED}'")),
        sa.Index(
            "ix_raw_records_waiting_on",
            "waiting_on",
            postgresql_where=sa.text(f"status = '{RECEIVED}' AND waiting_on IS NOT NULL"),
        ),
        # Dead `missing_parent` records keep what they waited for: replayed when that parent lands.
        sa.Index(
            "ix_raw_records_dead_waiting_on",
            "waiting_on",
            postgresql_where=sa.text(f"status = '{DEAD}' AND waiting_on IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    ingestion_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    record_type: Mapped[str] = mapped_column(sa.Text)
    natural_key: Mapped[str | None] = mapped_column(sa.Text)
    # Null once the retention job dropped it (payload_dropped_at says when): only ever for a
    # `persisted` record, whose stored row and lineage outlive the payload as received.
    payload: Mapped[Any | None] = mapped_column(JSONB)
    payload_dropped_at: Mapped[datetime | None] = mapped_column(TSTZ)
    status: Mapped[str] = mapped_column(sa.Text, server_default=RECEIVED)
    attempts: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    waiting_on: Mapped[str | None] = mapped_column(sa.Text)
    waiting_since: Mapped[datetime | None] = mapped_column(TSTZ)
    received_at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())
    enqueued_at: Mapped[datetime | None] = mapped_column(TSTZ)
    # The row of the uploaded file it came from (etl_app.uploads numbers them), null otherwise.
    source_row: Mapped[int | None] = mapped_column(sa.BigInteger)


# Retention: the persisted records whose payload is still there, by when they settled.
RawRecord.__table__.append_constraint(
    sa.Index(
        "ix_raw_records_payload_kept",
        "updated_at",
        postgresql_where=sa.text(f"status = '{PERSISTED}' AND payload_dropped_at IS NULL"),
    )
)


# Every raw record enters each index of this table twice (stored, then its settled version), so
# the two read rarely are the cheap kinds (migration 0021):
# the daily-quality job reads a window of days: a BRIN index on receipt time (rows are stored in
# the order received; the job summarizes new block ranges first, etl_app.quality.daily);
sa.Index("ix_raw_records_received_at", RawRecord.received_at, postgresql_using="brin")
# the lineage of a record (etl_app.lineage) reads the raw records of one key: a hash index on it.
sa.Index("ix_raw_records_natural_key", RawRecord.natural_key, postgresql_using="hash")


# ... and the ingestions that refused records, by type and day.
sa.Index(
    "ix_ingestions_refused",
    Ingestion.record_type,
    Ingestion.created_at,
    postgresql_where=sa.text("rejected > 0"),
)


# The ingestions whose quality is not stored yet (running, or settled and missed by the workers):
# what the outbox sweeper's catch-up looks at, however many ingestions are measured already.
sa.Index("ix_ingestions_unmeasured", Ingestion.created_at, postgresql_where=sa.text("quality IS NULL"))


class Rejection(Base):
    """A record refused before it entered the pipeline, by the API or the upload parser: kept
    with its place (``position``: the index in an API batch, the row of an uploaded file), the
    values as received and the field errors."""

    __tablename__ = "rejections"
    __table_args__ = (
        sa.Index("ix_rejections_ingestion_id_position", "ingestion_id", "position"),
        # The lineage of a record (etl_app.lineage): the rejections of one key, newest first.
        sa.Index("ix_rejections_record_type_natural_key", "record_type", "natural_key", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    ingestion_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    record_type: Mapped[str] = mapped_column(sa.Text)
    position: Mapped[int] = mapped_column(sa.BigInteger)
    natural_key: Mapped[str | None] = mapped_column(sa.Text)
    raw: Mapped[Any | None] = mapped_column(JSONB)
    # ``raw`` was cut to ETL_REJECTION_RAW_BYTES; ``raw_size``: the length of its JSON as received.
    raw_truncated: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    raw_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    errors: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())


# The ingestions list, newest first with a keyset on (created_at, id), of every type or of one;
# the overview's rejections per minute of the last hour.
sa.Index("ix_ingestions_created_at_id", Ingestion.created_at, Ingestion.id)


sa.Index("ix_ingestions_record_type_created_at_id", Ingestion.record_type, Ingestion.created_at, Ingestion.id)


sa.Index("ix_rejections_created_at", Rejection.created_at)


class IdempotencyKey(Base):
    """A submit's ``Idempotency-Key`` and the answer it was given (etl_app.ingest.idempotency):
    one row per API key (``owner``, its key id) and key, written in the transaction that stores
    the submission, kept until ``expires_at`` (ETL_IDEMPOTENCY_TTL_SECONDS after it)."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    key: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    # SHA-256 (hex) of what the request said (etl_app.api.idempotency.fingerprint)
    fingerprint: Mapped[str] = mapped_column(sa.Text)
    ingestion_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    status: Mapped[int] = mapped_column(sa.SmallInteger)
    body: Mapped[str] = mapped_column(sa.Text)  # the answer's JSON as sent, byte for byte
    created_at: Mapped[datetime] = mapped_column(TSTZ)
    expires_at: Mapped[datetime] = mapped_column(TSTZ, index=True)
