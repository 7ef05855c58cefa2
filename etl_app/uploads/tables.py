"""The uploads' tables: an uploaded file (uploads) and its bytes in pieces (upload_chunks), with
the upload statuses."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from etl_app.db import TSTZ, Base

# uploads.status values: `stored` until a parser takes it, `parsing`, then `parsed` (every row
# read) or `failed` (the file turned out unreadable part-way: the rows before stay).
FAILED = "failed"  # the same word as a failed job run's status
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
