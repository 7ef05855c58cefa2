"""the sweeper's catch-up finds unmeasured ingestions by index; the retention job drops read uploads' bytes

Revision ID: 0010
Revises: 0009
Create Date: 2027-01-04 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UNMEASURED = sa.text("quality IS NULL")


def upgrade() -> None:
    op.create_index("ix_ingestions_unmeasured", "ingestions", ["created_at"], unique=False, postgresql_where=UNMEASURED)
    op.add_column("uploads", sa.Column("bytes_dropped_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("uploads", "bytes_dropped_at")
    op.drop_index("ix_ingestions_unmeasured", table_name="ingestions", postgresql_where=UNMEASURED)
