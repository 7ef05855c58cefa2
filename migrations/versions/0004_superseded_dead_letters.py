"""superseded dead letters: a replay that settled without landing names the record that kept its key

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 12:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATUSES = "status IN ('open', 'replayed', 'superseded', 'discarded')"
STATUSES_BEFORE = "status IN ('open', 'replayed', 'discarded')"


def upgrade() -> None:
    op.add_column("dead_letters", sa.Column("superseded_by", sa.BigInteger(), nullable=True))
    op.add_column("dead_letters", sa.Column("superseded_by_ingestion_id", sa.Uuid(), nullable=True))
    op.drop_constraint(op.f("ck_dead_letters_status"), "dead_letters", type_="check")
    op.create_check_constraint(op.f("ck_dead_letters_status"), "dead_letters", STATUSES)


def downgrade() -> None:
    # Superseded ones were replayed; last_outcome keeps saying `superseded`.
    op.execute("UPDATE dead_letters SET status = 'replayed' WHERE status = 'superseded'")
    op.drop_constraint(op.f("ck_dead_letters_status"), "dead_letters", type_="check")
    op.create_check_constraint(op.f("ck_dead_letters_status"), "dead_letters", STATUSES_BEFORE)
    op.drop_column("dead_letters", "superseded_by_ingestion_id")
    op.drop_column("dead_letters", "superseded_by")
