"""uploads stored in chunks, rejections kept with their values, quality per ingestion, source rows

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-21 10:00:00

The rejections an ingestion kept in ``ingestions.rejections`` (its first 1,000, errors only) move
to the ``rejections`` table, without values (they were never stored); the column goes.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ingestions", sa.Column("quality", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("raw_records", sa.Column("source_row", sa.BigInteger(), nullable=True))
    op.create_table(
        "rejections",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("ingestion_id", sa.Uuid(), nullable=False),
        sa.Column("record_type", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("natural_key", sa.Text(), nullable=True),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejections")),
    )
    op.create_index("ix_rejections_ingestion_id_position", "rejections", ["ingestion_id", "position"], unique=False)
    op.execute(
        "INSERT INTO rejections (ingestion_id, record_type, position, errors, created_at) "
        "SELECT i.id, i.record_type, CAST(x.value ->> 'index' AS bigint), x.value -> 'errors', i.created_at "
        "FROM ingestions i CROSS JOIN LATERAL jsonb_array_elements(i.rejections) AS x(value) "
        "WHERE jsonb_typeof(i.rejections) = 'array' AND (x.value ->> 'index') ~ '^[0-9]+$' "
        "AND jsonb_typeof(x.value -> 'errors') = 'object' ORDER BY i.created_at, 3"
    )
    op.drop_column("ingestions", "rejections")
    op.create_table(
        "uploads",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("record_type", sa.Text(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("format", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("chunk_bytes", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), server_default="stored", nullable=False),
        sa.Column("rows_read", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "checkpoint", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("progress", sa.Double(), server_default="0", nullable=False),
        sa.Column("leased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("parsed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('stored', 'parsing', 'parsed', 'failed')", name=op.f("ck_uploads_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
    )
    op.create_index(
        "ix_uploads_unparsed",
        "uploads",
        ["leased_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('stored', 'parsing')"),
    )
    op.create_table(
        "upload_chunks",
        sa.Column("upload_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["upload_id"], ["uploads.id"], name=op.f("fk_upload_chunks_upload_id_uploads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("upload_id", "seq", name=op.f("pk_upload_chunks")),
    )
    # Stored as is: xlsx and parquet are compressed already, and a piece is read by its offset.
    op.execute("ALTER TABLE upload_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("upload_chunks")
    op.drop_index("ix_uploads_unparsed", table_name="uploads", postgresql_where=sa.text("status IN ('stored', 'parsing')"))
    op.drop_table("uploads")
    op.add_column(
        "ingestions",
        sa.Column(
            "rejections",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            autoincrement=False,
            nullable=False,
        ),
    )
    op.execute(
        "UPDATE ingestions i SET rejections = r.list FROM (SELECT ingestion_id, "
        "jsonb_agg(jsonb_build_object('index', position, 'errors', errors) ORDER BY position) AS list "
        "FROM rejections GROUP BY ingestion_id) r WHERE r.ingestion_id = i.id"
    )
    op.drop_index("ix_rejections_ingestion_id_position", table_name="rejections")
    op.drop_table("rejections")
    op.drop_column("raw_records", "source_row")
    op.drop_column("ingestions", "quality")
