"""bounded rejections: a rejection's values cut to a size (raw_truncated, raw_size), and the
rejections of an ingestion past the allowance only counted (rejections_stored, rejections_not_stored)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 22:50:00

Columns with constant defaults only: no table is rewritten. Ingestions stored before count their
rejections from 0 (an upload being read while this runs may store up to the allowance more).
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ingestions", sa.Column("rejections_stored", sa.Integer(), server_default="0", nullable=False))
    op.add_column("ingestions", sa.Column("rejections_not_stored", sa.Integer(), server_default="0", nullable=False))
    op.add_column("rejections", sa.Column("raw_truncated", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("rejections", sa.Column("raw_size", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("rejections", "raw_size")
    op.drop_column("rejections", "raw_truncated")
    op.drop_column("ingestions", "rejections_not_stored")
    op.drop_column("ingestions", "rejections_stored")
