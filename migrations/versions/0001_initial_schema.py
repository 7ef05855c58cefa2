"""initial schema: the outbox, ingestions, dead letters and the four tutoring tables

Revision ID: 0001
Revises:
Create Date: 2026-11-22 20:50:06.614520
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("raw_record_id", sa.BigInteger(), nullable=False),
        sa.Column("ingestion_id", sa.Uuid(), nullable=False),
        sa.Column("record_type", sa.Text(), nullable=False),
        sa.Column("natural_key", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("error_type", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("task_name", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.Text(), server_default="open", nullable=False),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("replay_count", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint("raw_record_id", name=op.f("uq_dead_letters_raw_record_id")),
    )
    op.create_index(op.f("ix_dead_letters_ingestion_id"), "dead_letters", ["ingestion_id"], unique=False)
    op.create_index("ix_dead_letters_last_failed_at", "dead_letters", ["last_failed_at"], unique=False)
    op.create_index(
        "ix_dead_letters_record_type_error_type", "dead_letters", ["record_type", "error_type"], unique=False
    )
    op.create_table(
        "feedback",
        sa.Column("feedback_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("student_id", sa.Text(), nullable=False),
        sa.Column("tutor_id", sa.Text(), nullable=False),
        sa.Column("overall_rating", sa.Integer(), nullable=False),
        sa.Column("subject_knowledge_rating", sa.Integer(), nullable=True),
        sa.Column("communication_rating", sa.Integer(), nullable=True),
        sa.Column("patience_rating", sa.Integer(), nullable=True),
        sa.Column("engagement_rating", sa.Integer(), nullable=True),
        sa.Column("helpfulness_rating", sa.Integer(), nullable=True),
        sa.Column("free_text_feedback", sa.Text(), nullable=True),
        sa.Column("is_first_session", sa.Boolean(), nullable=True),
        sa.Column("would_recommend", sa.Boolean(), nullable=True),
        sa.Column("improvement_areas", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_positive", sa.Boolean(), nullable=False),
        sa.Column("is_poor", sa.Boolean(), nullable=False),
        sa.Column("avg_category_rating", sa.Double(), nullable=True),
        sa.Column("category_variance", sa.Double(), nullable=True),
        sa.Column("has_text_feedback", sa.Boolean(), nullable=False),
        sa.Column("feedback_delay_hours", sa.Double(), nullable=False),
        sa.Column("ingestion_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enriched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("persisted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("feedback_id", name=op.f("pk_feedback")),
    )
    op.create_index(op.f("ix_feedback_ingestion_id"), "feedback", ["ingestion_id"], unique=False)
    op.create_index(op.f("ix_feedback_session_id"), "feedback", ["session_id"], unique=False)
    op.create_table(
        "ingestions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("record_type", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("accepted", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rejected", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "rejections", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingestions")),
    )
    op.create_table(
        "raw_records",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("ingestion_id", sa.Uuid(), nullable=False),
        sa.Column("record_type", sa.Text(), nullable=False),
        sa.Column("natural_key", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), server_default="received", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("waiting_on", sa.Text(), nullable=True),
        sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('received', 'persisted', 'dead', 'rejected')", name=op.f("ck_raw_records_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_records")),
    )
    op.create_index("ix_raw_records_ingestion_id_status", "raw_records", ["ingestion_id", "status"], unique=False)
    op.create_index(
        "ix_raw_records_unsettled",
        "raw_records",
        ["enqueued_at"],
        unique=False,
        postgresql_where=sa.text("status = 'received'"),
    )
    op.create_index(
        "ix_raw_records_waiting_on",
        "raw_records",
        ["waiting_on"],
        unique=False,
        postgresql_where=sa.text("status = 'received' AND waiting_on IS NOT NULL"),
    )
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("tutor_id", sa.Text(), nullable=False),
        sa.Column("student_id", sa.Text(), nullable=False),
        sa.Column("session_number", sa.Integer(), nullable=False),
        sa.Column("is_first_session", sa.Boolean(), nullable=False),
        sa.Column("scheduled_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actual_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("session_type", sa.Text(), nullable=False),
        sa.Column("tutor_initiated_reschedule", sa.Boolean(), nullable=False),
        sa.Column("no_show", sa.Boolean(), nullable=False),
        sa.Column("late_start_minutes", sa.Integer(), nullable=True),
        sa.Column("engagement_score", sa.Double(), nullable=True),
        sa.Column("learning_objectives_met", sa.Boolean(), nullable=True),
        sa.Column("technical_issues", sa.Boolean(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_weekend", sa.Boolean(), nullable=False),
        sa.Column("time_of_day", sa.Text(), nullable=False),
        sa.Column("is_late_start", sa.Boolean(), nullable=False),
        sa.Column("actual_duration_minutes", sa.Integer(), nullable=False),
        sa.Column("week_of_year", sa.Integer(), nullable=False),
        sa.Column("month_of_year", sa.Integer(), nullable=False),
        sa.Column("ingestion_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enriched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("persisted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_sessions")),
    )
    op.create_index(op.f("ix_sessions_ingestion_id"), "sessions", ["ingestion_id"], unique=False)
    op.create_index(op.f("ix_sessions_student_id"), "sessions", ["student_id"], unique=False)
    op.create_index(op.f("ix_sessions_tutor_id"), "sessions", ["tutor_id"], unique=False)
    op.create_table(
        "students",
        sa.Column("student_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("grade_level", sa.Integer(), nullable=True),
        sa.Column("enrolled_on", sa.Date(), nullable=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ingestion_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enriched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("persisted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("student_id", name=op.f("pk_students")),
    )
    op.create_index(op.f("ix_students_ingestion_id"), "students", ["ingestion_id"], unique=False)
    op.create_table(
        "tutors",
        sa.Column("tutor_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("age", sa.Integer(), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("education_level", sa.Text(), nullable=True),
        sa.Column("subjects", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("subject_type", sa.Text(), nullable=True),
        sa.Column("behavioral_archetype", sa.Text(), nullable=True),
        sa.Column("onboarding_date", sa.Date(), nullable=False),
        sa.Column("baseline_sessions_per_week", sa.Double(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tenure_days", sa.Integer(), nullable=False),
        sa.Column("is_new_tutor", sa.Boolean(), nullable=False),
        sa.Column("experience_level", sa.Text(), nullable=False),
        sa.Column("subject_count", sa.Integer(), nullable=False),
        sa.Column("is_active_today", sa.Boolean(), nullable=False),
        sa.Column("ingestion_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enriched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("persisted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("tutor_id", name=op.f("pk_tutors")),
    )
    op.create_index(op.f("ix_tutors_ingestion_id"), "tutors", ["ingestion_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tutors_ingestion_id"), table_name="tutors")
    op.drop_table("tutors")
    op.drop_index(op.f("ix_students_ingestion_id"), table_name="students")
    op.drop_table("students")
    op.drop_index(op.f("ix_sessions_tutor_id"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_student_id"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_ingestion_id"), table_name="sessions")
    op.drop_table("sessions")
    op.drop_index(
        "ix_raw_records_waiting_on",
        table_name="raw_records",
        postgresql_where=sa.text("status = 'received' AND waiting_on IS NOT NULL"),
    )
    op.drop_index("ix_raw_records_unsettled", table_name="raw_records", postgresql_where=sa.text("status = 'received'"))
    op.drop_index("ix_raw_records_ingestion_id_status", table_name="raw_records")
    op.drop_table("raw_records")
    op.drop_table("ingestions")
    op.drop_index(op.f("ix_feedback_session_id"), table_name="feedback")
    op.drop_index(op.f("ix_feedback_ingestion_id"), table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_dead_letters_record_type_error_type", table_name="dead_letters")
    op.drop_index("ix_dead_letters_last_failed_at", table_name="dead_letters")
    op.drop_index(op.f("ix_dead_letters_ingestion_id"), table_name="dead_letters")
    op.drop_table("dead_letters")
