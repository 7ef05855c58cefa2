"""the audit trail records an operator giving up on records waiting for their parents (give_up)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 05:20:00
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

BEFORE = ("replay", "bulk_replay", "discard", "bulk_discard", "edit", "job_run", "breaker_reset")
AFTER = (*BEFORE, "give_up")


def upgrade() -> None:
    op.drop_constraint(op.f("ck_audit_action"), "audit", type_="check")
    op.create_check_constraint(op.f("ck_audit_action"), "audit", f"action IN {AFTER!r}")


def downgrade() -> None:
    # The older schema cannot hold them: the give-ups leave the trail (their dead letters stay).
    op.execute("DELETE FROM audit WHERE action = 'give_up'")
    op.drop_constraint(op.f("ck_audit_action"), "audit", type_="check")
    op.create_check_constraint(op.f("ck_audit_action"), "audit", f"action IN {BEFORE!r}")
