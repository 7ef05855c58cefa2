"""The service's own tables: the outbox (raw_records), ingestions and dead letters."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from etl_app import errors
from etl_app.db import Base

# raw_records.status values. `received` until settled. `rejected` is counted and shown wherever
# statuses are, but no code path writes it any more: records refused by the API or by an upload's
# parser are kept in the `rejections` table instead, and never enter the outbox.
RECEIVED = "received"
PERSISTED = "persisted"
DEAD = "dead"
REJECTED = "rejected"
STATUSES = (RECEIVED, PERSISTED, DEAD, REJECTED)

TSTZ = sa.DateTime(timezone=True)


class Ingestion(Base):
    """One API call (single, batch, NDJSON or upload) and what it was told."""

    __tablename__ = "ingestions"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    record_type: Mapped[str] = mapped_column(sa.Text)
    source: Mapped[str] = mapped_column(sa.Text)
    accepted: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    rejected: Mapped[int] = mapped_column(sa.Integer, server_default="0")
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


# dead_letters.status values: `open` until replayed or discarded; a replayed record that fails
# again reopens the same row. A replayed record that settles without landing, because the table
# already holds a later record of its key, makes it `superseded` (for good: its raw record is
# `persisted`, settled like any record that lost to a later one), with `superseded_by` naming
# that record. dead_letters.last_outcome: what became of the latest replay.
# The id of a group of dead letters: 16 hex digits of the md5 of record type, error type and cause.
GROUP_KEY_SQL = "left(md5(record_type || chr(31) || error_type || chr(31) || cause), 16)"
OPEN = "open"
REPLAYED = "replayed"
SUPERSEDED = "superseded"
DISCARDED = "discarded"
DEAD_LETTER_STATUSES = (OPEN, REPLAYED, SUPERSEDED, DISCARDED)
OUTCOMES = (REPLAYED, PERSISTED, SUPERSEDED, DEAD)


class DeadLetter(Base):
    """A record that failed for good, with its error; one row per raw record."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {DEAD_LETTER_STATUSES!r}", name="status"),
        sa.Index("ix_dead_letters_record_type_error_type", "record_type", "error_type"),
        sa.Index("ix_dead_letters_last_failed_at", "last_failed_at"),
        sa.Index("ix_dead_letters_status_id", "status", "id"),
        # Groups by cause (etl_app.dead_letters.groups) from the index alone.
        sa.Index(
            "ix_dead_letters_groups",
            "status",
            "group_key",
            "last_failed_at",
            postgresql_include=["record_type", "error_type", "first_failed_at", "id"],
        ),
        # One group's dead letters newest first (the Dead letters page's group).
        sa.Index("ix_dead_letters_group_key_status_id", "group_key", "status", "id"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    raw_record_id: Mapped[int] = mapped_column(sa.BigInteger, unique=True)
    ingestion_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, index=True)
    record_type: Mapped[str] = mapped_column(sa.Text)
    natural_key: Mapped[str | None] = mapped_column(sa.Text)
    payload: Mapped[Any] = mapped_column(JSONB)
    error_type: Mapped[str] = mapped_column(sa.Text)
    error: Mapped[str] = mapped_column(sa.Text)
    traceback: Mapped[str | None] = mapped_column(sa.Text)
    task_name: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    status: Mapped[str] = mapped_column(sa.Text, server_default=OPEN)
    first_failed_at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())
    last_failed_at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())
    replay_count: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    last_replayed_at: Mapped[datetime | None] = mapped_column(TSTZ)
    last_outcome: Mapped[str | None] = mapped_column(sa.Text)
    # The stored record that kept the key of a superseded one: its raw record (null for a row
    # stored before tables carried raw_record_id) and its ingestion.
    superseded_by: Mapped[int | None] = mapped_column(sa.BigInteger)
    superseded_by_ingestion_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    # The error's cause (etl_app.dead_letters.causes.normalise) and the id of its group: the record
    # type, error type and cause hashed.
    cause: Mapped[str] = mapped_column(sa.Text)
    group_key: Mapped[str] = mapped_column(sa.Text, sa.Computed(GROUP_KEY_SQL, persisted=True))


class DeadLetterEdit(Base):
    """A payload corrected before a replay (etl_app.dead_letters.edits): the dead letter's payload as
    it was (``original``), as replayed (``edited``), and the key id that did it."""

    __tablename__ = "dead_letter_edits"
    __table_args__ = (sa.Index("ix_dead_letter_edits_dead_letter_id_id", "dead_letter_id", "id"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    dead_letter_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("dead_letters.id", ondelete="CASCADE"))
    raw_record_id: Mapped[int] = mapped_column(sa.BigInteger)
    key_id: Mapped[str] = mapped_column(sa.Text)
    at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())
    original: Mapped[Any] = mapped_column(JSONB)
    edited: Mapped[Any] = mapped_column(JSONB)


# -- scheduled jobs --------------------------------------------------------------------------

# job_runs.status values. A run is `running` while it holds its job's lock; a run that found the
# lock held by another is recorded `skipped` at once (it never waits, never does the work).
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
JOB_RUN_STATUSES = (RUNNING, SUCCEEDED, FAILED, SKIPPED)
JOB_TRIGGERS = ("beat", "cli", "api")


class JobRun(Base):
    """One run of a scheduled job (etl_app.jobs): its window, who started it, what it did."""

    __tablename__ = "job_runs"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {JOB_RUN_STATUSES!r}", name="status"),
        sa.CheckConstraint(f"trigger IN {JOB_TRIGGERS!r}", name="trigger"),
        sa.Index("ix_job_runs_job_started_at", "job", "started_at"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    job: Mapped[str] = mapped_column(sa.Text)
    window_start: Mapped[date] = mapped_column(sa.Date)
    window_end: Mapped[date] = mapped_column(sa.Date)
    trigger: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.Text, server_default=RUNNING)
    task_id: Mapped[str | None] = mapped_column(sa.Text)  # the Celery task, when one ran it
    started_at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())
    finished_at: Mapped[datetime | None] = mapped_column(TSTZ)
    rows: Mapped[int | None] = mapped_column(sa.Integer)
    error: Mapped[str | None] = mapped_column(sa.Text)


# -- The quality and rollup jobs' tables ------------------------------------------------------

# The daily-quality job reads a window of days of one type: by type and receipt time.
sa.Index("ix_raw_records_record_type_received_at", RawRecord.record_type, RawRecord.received_at)
# The lineage of a record (etl_app.lineage): the raw records and rejections of one key, newest first.
sa.Index(
    "ix_raw_records_record_type_natural_key",
    RawRecord.record_type,
    RawRecord.natural_key,
    RawRecord.received_at,
    RawRecord.id,
)
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


class DailyQuality(Base):
    """The data quality of one record type on one UTC day of receipt (docs/quality.md), written by
    the daily-quality job (etl_app.quality.daily); the columns are etl_app.quality's metrics."""

    __tablename__ = "daily_quality"

    record_type: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    received: Mapped[int] = mapped_column(sa.Integer)
    accepted: Mapped[int] = mapped_column(sa.Integer)
    rejected: Mapped[int] = mapped_column(sa.Integer)
    validity: Mapped[float] = mapped_column(sa.Double)
    completeness: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    uniqueness: Mapped[float | None] = mapped_column(sa.Double)
    integrity: Mapped[float | None] = mapped_column(sa.Double)
    timeliness_p50: Mapped[float | None] = mapped_column(sa.Double)
    timeliness_p95: Mapped[float | None] = mapped_column(sa.Double)
    timeliness_max: Mapped[float | None] = mapped_column(sa.Double)
    score: Mapped[float | None] = mapped_column(sa.Double)
    level: Mapped[str] = mapped_column(sa.Text)
    top_errors: Mapped[list[Any]] = mapped_column(JSONB)


class TutorDailyMetrics(Base):
    """The tutor performance rollup (docs/quality.md): one row per tutor and UTC day of
    ``scheduled_start``, written by the tutor-rollups job (etl_app.jobs.rollups)."""

    __tablename__ = "tutor_daily_metrics"
    __table_args__ = (sa.Index("ix_tutor_daily_metrics_day", "day"),)  # the job replaces a window of days

    tutor_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    sessions: Mapped[int] = mapped_column(sa.Integer)
    completed: Mapped[int] = mapped_column(sa.Integer)
    no_shows: Mapped[int] = mapped_column(sa.Integer)
    late_starts: Mapped[int] = mapped_column(sa.Integer)
    tutor_reschedules: Mapped[int] = mapped_column(sa.Integer)
    technical_issues: Mapped[int] = mapped_column(sa.Integer)
    avg_engagement: Mapped[float | None] = mapped_column(sa.Double)
    feedback_count: Mapped[int] = mapped_column(sa.Integer)
    avg_rating: Mapped[float | None] = mapped_column(sa.Double)


# -- The audit trail --------------------------------------------------------------------------

# audit.action values: what an operator (a key, the command line) or beat did.
AUDIT_ACTIONS = ("replay", "bulk_replay", "discard", "bulk_discard", "edit", "job_run", "breaker_reset")
# audit.outcome values: done; refused (the key's role lacks the right); failed (with its message).
AUDIT_OUTCOMES = ("ok", "refused", "failed")


class AuditEntry(Base):
    """Who did what (etl_app.audit): one row per replay, discard, edit or job run, by key id (never
    the key), ``cli`` or ``beat``."""

    __tablename__ = "audit"
    __table_args__ = (
        sa.CheckConstraint(f"action IN {AUDIT_ACTIONS!r}", name="action"),
        sa.CheckConstraint(f"outcome IN {AUDIT_OUTCOMES!r}", name="outcome"),
        sa.Index("ix_audit_at", "at"),
        sa.Index("ix_audit_key_id_id", "key_id", "id"),
        sa.Index("ix_audit_action_id", "action", "id"),
        # The replays and edits of one dead letter, for the lineage of a record (etl_app.lineage).
        sa.Index(
            "ix_audit_dead_letter_replays",
            sa.text("(target ->> 'dead_letter_id')"),
            postgresql_where=sa.text("action IN ('replay', 'edit')"),
        ),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())
    key_id: Mapped[str] = mapped_column(sa.Text)
    action: Mapped[str] = mapped_column(sa.Text)
    target: Mapped[dict[str, Any]] = mapped_column(JSONB)
    count: Mapped[int | None] = mapped_column(sa.Integer)
    outcome: Mapped[str] = mapped_column(sa.Text)
    message: Mapped[str | None] = mapped_column(sa.Text)
    request_id: Mapped[str | None] = mapped_column(sa.Text)


# -- Rejections and uploads ---------------------------------------------------------------------


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
    errors: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())


# uploads.status values: `stored` until a parser takes it, `parsing`, then `parsed` (every row
# read) or `failed` (the file turned out unreadable part-way: the rows before stay).
STORED = "stored"
PARSING = "parsing"
PARSED = "parsed"
UPLOAD_STATUSES = (STORED, PARSING, PARSED, FAILED)


class Upload(Base):
    """An uploaded file of one ingestion (same id), its bytes in ``upload_chunks``, and how far
    its parser got: ``rows_read`` rows, resumable from ``checkpoint``."""

    __tablename__ = "uploads"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {UPLOAD_STATUSES!r}", name="status"),
        sa.Index("ix_uploads_unparsed", "leased_at", postgresql_where=sa.text("status IN ('stored', 'parsing')")),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    record_type: Mapped[str] = mapped_column(sa.Text)
    filename: Mapped[str] = mapped_column(sa.Text)  # as the client named it, for display only
    format: Mapped[str] = mapped_column(sa.Text)
    note: Mapped[str | None] = mapped_column(sa.Text)  # e.g. named .csv but read as xlsx
    size: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.Text)
    chunk_bytes: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.Text, server_default=STORED)
    rows_read: Mapped[int] = mapped_column(sa.BigInteger, server_default="0")
    checkpoint: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=sa.text("'{}'::jsonb"))
    progress: Mapped[float] = mapped_column(sa.Double, server_default="0")
    leased_at: Mapped[datetime | None] = mapped_column(TSTZ)
    created_at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())
    parsed_at: Mapped[datetime | None] = mapped_column(TSTZ)
    error: Mapped[str | None] = mapped_column(sa.Text)
    # When the retention job dropped its bytes (upload_chunks), ETL_RAW_RETENTION_DAYS after it was read.
    bytes_dropped_at: Mapped[datetime | None] = mapped_column(TSTZ)


class UploadChunk(Base):
    """One piece of an uploaded file's bytes, ``seq`` from 0, each ``chunk_bytes`` long but the last."""

    __tablename__ = "upload_chunks"

    upload_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)


# -- The operator's pages (etl_app.ui) ----------------------------------------------------------

# The ingestions list, newest first with a keyset on (created_at, id), of every type or of one;
# the overview's rejections per minute of the last hour.
sa.Index("ix_ingestions_created_at_id", Ingestion.created_at, Ingestion.id)
sa.Index("ix_ingestions_record_type_created_at_id", Ingestion.record_type, Ingestion.created_at, Ingestion.id)
sa.Index("ix_rejections_created_at", Rejection.created_at)


# -- SQL text with the status names bound ----------------------------------------------------

# The values a SQL statement names by placeholder instead of spelling them, each under the name
# of its constant: ``:RECEIVED``, ``:OPEN``, ``:MISSING_PARENT``, ... (upper case, so they never
# collide with a statement's own lower-case parameters).
NAMED_VALUES = {
    value.upper(): value
    for value in (*STATUSES, *DEAD_LETTER_STATUSES, *UPLOAD_STATUSES, *JOB_RUN_STATUSES, *errors.ERROR_TYPES)
}
_PLACEHOLDER = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")  # as sqlalchemy.text finds them


def sql(statement: str) -> sa.TextClause:
    """``sa.text(statement)`` with the placeholders named in :data:`NAMED_VALUES` bound to their
    values. They are rendered inline when the statement runs (``literal_execute``), so that
    PostgreSQL still proves a partial index's ``status = 'received'`` whatever plan it caches;
    callers pass only their own parameters."""
    names = sorted(set(_PLACEHOLDER.findall(statement)) & NAMED_VALUES.keys())
    binds = (sa.bindparam(n, NAMED_VALUES[n], type_=sa.Text, literal_execute=True) for n in names)
    return sa.text(statement).bindparams(*binds)
