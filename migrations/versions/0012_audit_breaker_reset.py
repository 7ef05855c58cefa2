"""the audit trail records an operator's reset of a lookup provider's circuit breaker (breaker_reset)

Revision ID: 0012
Revises: 0011
Create Date: 2027-01-12 10:00:00
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BEFORE = ("replay", "bulk_replay", "discard", "bulk_discard", "edit", "job_run")
AFTER = (*BEFORE, "breaker_reset")


def upgrade() -> None:
    op.drop_constraint(op.f("ck_audit_action"), "audit", type_="check")
    op.create_check_constraint(op.f("ck_audit_action"), "audit", f"action IN {AFTER!r}")


def downgrade() -> None:
    # The older schema cannot hold them: the breaker resets leave the trail.
    op.execute("DELETE FROM audit WHERE action = 'breaker_reset'")
    op.drop_constraint(op.f("ck_audit_action"), "audit", type_="check")
    op.create_check_constraint(op.f("ck_audit_action"), "audit", f"action IN {BEFORE!r}")
