"""scheduled jobs: job_runs, and raw payloads the retention job may drop

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 09:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("window_start", sa.Date(), nullable=False),
        sa.Column("window_end", sa.Date(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column("task_id", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed', 'skipped')", name=op.f("ck_job_runs_status")),
        sa.CheckConstraint("trigger IN ('beat', 'cli', 'api')", name=op.f("ck_job_runs_trigger")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_runs")),
    )
    op.create_index("ix_job_runs_job_started_at", "job_runs", ["job", "started_at"], unique=False)

    op.alter_column("raw_records", "payload", existing_type=postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    op.add_column("raw_records", sa.Column("payload_dropped_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_raw_records_payload_kept",
        "raw_records",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("status = 'persisted' AND payload_dropped_at IS NULL"),
    )


def downgrade() -> None:
    # A dropped payload cannot come back: its raw record keeps an empty object in its place.
    op.drop_index(
        "ix_raw_records_payload_kept",
        table_name="raw_records",
        postgresql_where=sa.text("status = 'persisted' AND payload_dropped_at IS NULL"),
    )
    op.execute("UPDATE raw_records SET payload = '{}'::jsonb WHERE payload IS NULL")
    op.drop_column("raw_records", "payload_dropped_at")
    op.alter_column("raw_records", "payload", existing_type=postgresql.JSONB(astext_type=sa.Text()), nullable=False)
    op.drop_index("ix_job_runs_job_started_at", table_name="job_runs")
    op.drop_table("job_runs")
