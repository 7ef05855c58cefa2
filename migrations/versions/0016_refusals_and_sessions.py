"""refused actions of the audit trail counted in one row per key, action and minute
(occurrences, first_at, window_start), and the operator pages' sessions (ui_sessions)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 22:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit", sa.Column("occurrences", sa.Integer(), server_default="1", nullable=False))
    op.add_column("audit", sa.Column("first_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("audit", sa.Column("window_start", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ux_audit_refusals",
        "audit",
        ["key_id", "action", "window_start"],
        unique=True,
        postgresql_where=sa.text("outcome = 'refused'"),
    )
    op.create_table(
        "ui_sessions",
        sa.Column("id_digest", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_digest", name=op.f("pk_ui_sessions")),
    )
    op.create_index("ix_ui_sessions_key_id", "ui_sessions", ["key_id"], unique=False)
    op.create_index("ix_ui_sessions_expires_at", "ui_sessions", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ui_sessions_expires_at", table_name="ui_sessions")
    op.drop_index("ix_ui_sessions_key_id", table_name="ui_sessions")
    op.drop_table("ui_sessions")
    op.drop_index("ux_audit_refusals", table_name="audit", postgresql_where=sa.text("outcome = 'refused'"))
    op.drop_column("audit", "window_start")
    op.drop_column("audit", "first_at")
    op.drop_column("audit", "occurrences")
