"""schema contracts: an ``extra`` jsonb column on each built-in record table, holding the unknown
fields a record type set to ``unknown=keep`` stores beside the record

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 05:00:00

Nullable columns with no default: no table is rewritten, and rows stored before have none.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

TABLES = ("tutors", "students", "sessions", "feedback")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("extra", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "extra")
