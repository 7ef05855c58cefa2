"""indexes for the lineage of one record: raw records and rejections by key, replays by dead letter

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-28 10:00:00

Plain CREATE INDEX (Alembic runs in a transaction, where CONCURRENTLY is not allowed): it holds
a write lock on each table while it builds.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

AUDIT_REPLAYS = sa.text("action IN ('replay', 'edit')")


def upgrade() -> None:
    op.create_index(
        "ix_raw_records_record_type_natural_key",
        "raw_records",
        ["record_type", "natural_key", "received_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_rejections_record_type_natural_key",
        "rejections",
        ["record_type", "natural_key", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_audit_dead_letter_replays",
        "audit",
        [sa.text("(target ->> 'dead_letter_id')")],
        unique=False,
        postgresql_where=AUDIT_REPLAYS,
    )


def downgrade() -> None:
    op.drop_index("ix_audit_dead_letter_replays", table_name="audit", postgresql_where=AUDIT_REPLAYS)
    op.drop_index("ix_rejections_record_type_natural_key", table_name="rejections")
    op.drop_index("ix_raw_records_record_type_natural_key", table_name="raw_records")
