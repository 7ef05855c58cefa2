"""the operator's pages: ingestions newest first by keyset (of every type or one), rejections by time

Revision ID: 0014
Revises: 0013
Create Date: 2027-01-15 10:00:00

Three small indexes: ingestions get one row per API call or upload, rejections one per refused
record, so building them takes a moment even on a large database.
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ingestions_created_at_id", "ingestions", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_ingestions_record_type_created_at_id", "ingestions", ["record_type", "created_at", "id"], unique=False
    )
    op.create_index("ix_rejections_created_at", "rejections", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_rejections_created_at", table_name="rejections")
    op.drop_index("ix_ingestions_record_type_created_at_id", table_name="ingestions")
    op.drop_index("ix_ingestions_created_at_id", table_name="ingestions")
