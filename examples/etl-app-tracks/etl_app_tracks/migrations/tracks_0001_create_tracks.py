"""tracks: the table of the tracks record type (the first revision of the branch ``tracks``)

Revision ID: tracks_0001
Revises:
Create Date: 2026-11-30 16:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "tracks_0001"
down_revision = None
branch_labels = ("tracks",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracks",
        sa.Column("track_id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("artist", sa.Text(), nullable=False),
        sa.Column("album", sa.Text(), nullable=True),
        sa.Column("genre", sa.Text(), nullable=True),
        sa.Column("duration_seconds", sa.Integer(), nullable=False),
        sa.Column("released_on", sa.Date(), nullable=True),
        sa.Column("explicit", sa.Boolean(), nullable=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_minutes", sa.Double(), nullable=False),
        sa.Column("decade", sa.Integer(), nullable=True),
        sa.Column("years_since_release", sa.Integer(), nullable=True),
        sa.Column("is_long", sa.Boolean(), nullable=False),
        sa.Column("ingestion_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enriched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("persisted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("raw_record_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("track_id", name=op.f("pk_tracks")),
    )
    op.create_index(op.f("ix_tracks_ingestion_id"), "tracks", ["ingestion_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tracks_ingestion_id"), table_name="tracks")
    op.drop_table("tracks")
