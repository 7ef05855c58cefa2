"""The dead-letter domain's tables: dead_letters and dead_letter_edits, with their statuses."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from etl_app.db import TSTZ, Base
from etl_app.ingest.tables import DEAD, PERSISTED

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
