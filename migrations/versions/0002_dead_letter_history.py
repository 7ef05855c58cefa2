"""dead letter history: last replay and its outcome, status check, indexes for listing and wake-ups

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 21:00:00
"""

from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DEAD_WAITING = "status = 'dead' AND waiting_on IS NOT NULL"


def upgrade() -> None:
    op.add_column("dead_letters", sa.Column("last_replayed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("dead_letters", sa.Column("last_outcome", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_dead_letters_status"), "dead_letters", "status IN ('open', 'replayed', 'discarded')"
    )
    op.create_index("ix_dead_letters_status_id", "dead_letters", ["status", "id"], unique=False)
    op.create_index(
        "ix_raw_records_dead_waiting_on",
        "raw_records",
        ["waiting_on"],
        unique=False,
        postgresql_where=sa.text(DEAD_WAITING),
    )


def downgrade() -> None:
    op.drop_index("ix_raw_records_dead_waiting_on", table_name="raw_records", postgresql_where=sa.text(DEAD_WAITING))
    op.drop_index("ix_dead_letters_status_id", table_name="dead_letters")
    op.drop_constraint(op.f("ck_dead_letters_status"), "dead_letters", type_="check")
    op.drop_column("dead_letters", "last_outcome")
    op.drop_column("dead_letters", "last_replayed_at")
