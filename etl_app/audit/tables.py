"""The audit trail's table, with its actions and outcomes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from etl_app.db import TSTZ, Base

# audit.action values: what an operator (a key, the command line) or beat did.
AUDIT_ACTIONS = ("replay", "bulk_replay", "discard", "bulk_discard", "edit", "job_run", "breaker_reset", "give_up")


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
        # Refusals are counted in one row per key, action and minute (etl_app.audit.record).
        sa.Index(
            "ux_audit_refusals",
            "key_id",
            "action",
            "window_start",
            unique=True,
            postgresql_where=sa.text("outcome = 'refused'"),
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
    # How many times it happened: 1, but for refusals, counted per key, action and minute
    # (``window_start``, null for the other outcomes) from ``first_at`` to ``at``.
    occurrences: Mapped[int] = mapped_column(sa.Integer, server_default="1")
    first_at: Mapped[datetime | None] = mapped_column(TSTZ)
    window_start: Mapped[datetime | None] = mapped_column(TSTZ)
