"""the audit trail: who replayed, discarded, edited dead letters and ran jobs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-14 10:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("count", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "action IN ('replay', 'bulk_replay', 'discard', 'bulk_discard', 'edit', 'job_run')",
            name=op.f("ck_audit_action"),
        ),
        sa.CheckConstraint("outcome IN ('ok', 'refused', 'failed')", name=op.f("ck_audit_outcome")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    op.create_index("ix_audit_at", "audit", ["at"], unique=False)
    op.create_index("ix_audit_key_id_id", "audit", ["key_id", "id"], unique=False)
    op.create_index("ix_audit_action_id", "audit", ["action", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_action_id", table_name="audit")
    op.drop_index("ix_audit_key_id_id", table_name="audit")
    op.drop_index("ix_audit_at", table_name="audit")
    op.drop_table("audit")
