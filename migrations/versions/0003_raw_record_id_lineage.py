"""raw_record_id lineage column on every record-type table

It orders two records of one key received in the same request (same received_at), so the
later one wins whichever chunk commits last.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 21:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("tutors", "students", "sessions", "feedback")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("raw_record_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "raw_record_id")
