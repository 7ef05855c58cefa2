"""quality and rollup jobs: daily_quality, tutor_daily_metrics, and the indexes their windows read

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 10:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daily_quality",
        sa.Column("record_type", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("received", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("validity", sa.Double(), nullable=False),
        sa.Column("completeness", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("uniqueness", sa.Double(), nullable=True),
        sa.Column("integrity", sa.Double(), nullable=True),
        sa.Column("timeliness_p50", sa.Double(), nullable=True),
        sa.Column("timeliness_p95", sa.Double(), nullable=True),
        sa.Column("timeliness_max", sa.Double(), nullable=True),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("level", sa.Text(), nullable=False),
        sa.Column("top_errors", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("record_type", "day", name=op.f("pk_daily_quality")),
    )
    op.create_table(
        "tutor_daily_metrics",
        sa.Column("tutor_id", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("sessions", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("no_shows", sa.Integer(), nullable=False),
        sa.Column("late_starts", sa.Integer(), nullable=False),
        sa.Column("tutor_reschedules", sa.Integer(), nullable=False),
        sa.Column("technical_issues", sa.Integer(), nullable=False),
        sa.Column("avg_engagement", sa.Double(), nullable=True),
        sa.Column("feedback_count", sa.Integer(), nullable=False),
        sa.Column("avg_rating", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("tutor_id", "day", name=op.f("pk_tutor_daily_metrics")),
    )
    op.create_index("ix_tutor_daily_metrics_day", "tutor_daily_metrics", ["day"], unique=False)
    op.create_index(
        "ix_raw_records_record_type_received_at", "raw_records", ["record_type", "received_at"], unique=False
    )
    op.create_index(
        "ix_ingestions_refused",
        "ingestions",
        ["record_type", "created_at"],
        unique=False,
        postgresql_where=sa.text("rejected > 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_ingestions_refused", table_name="ingestions", postgresql_where=sa.text("rejected > 0"))
    op.drop_index("ix_raw_records_record_type_received_at", table_name="raw_records")
    op.drop_index("ix_tutor_daily_metrics_day", table_name="tutor_daily_metrics")
    op.drop_table("tutor_daily_metrics")
    op.drop_table("daily_quality")
