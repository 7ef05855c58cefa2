"""dead letters grouped by cause: the normalised error (cause), a group id generated from record
type, error type and cause (group_key), and an index that groups them from the index alone

Revision ID: 0013
Revises: 0012
Create Date: 2027-01-14 10:00:00

Existing rows get their cause from the normaliser of this version (etl_app.dead_letters.causes),
in batches of 5,000 by id. Adding the generated column rewrites the table once, holding a write
lock on it; 100,000 dead letters take a few seconds.
"""

import sqlalchemy as sa
from alembic import op

from etl_app.dead_letters.causes import normalise

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BATCH = 5000
# As etl_app.models.GROUP_KEY_SQL: 16 hex digits of the md5 of the three parts.
GROUP_KEY_SQL = "left(md5(record_type || chr(31) || error_type || chr(31) || cause), 16)"
INCLUDED = ["record_type", "error_type", "first_failed_at", "id"]


def _fill_causes(conn: sa.Connection) -> None:
    after = 0
    while True:
        rows = conn.execute(
            sa.text("SELECT id, error FROM dead_letters WHERE id > :after ORDER BY id LIMIT :batch"),
            {"after": after, "batch": BATCH},
        ).all()
        if not rows:
            return
        conn.execute(
            sa.text(
                "UPDATE dead_letters d SET cause = f.cause "
                "FROM unnest(CAST(:ids AS bigint[]), CAST(:causes AS text[])) AS f(id, cause) WHERE d.id = f.id"
            ),
            {"ids": [r.id for r in rows], "causes": [normalise(r.error) for r in rows]},
        )
        after = rows[-1].id


def upgrade() -> None:
    op.add_column("dead_letters", sa.Column("cause", sa.Text(), nullable=True))
    _fill_causes(op.get_bind())
    op.alter_column("dead_letters", "cause", nullable=False)
    op.add_column(
        "dead_letters",
        sa.Column("group_key", sa.Text(), sa.Computed(GROUP_KEY_SQL, persisted=True), nullable=False),
    )
    op.create_index(
        "ix_dead_letters_groups",
        "dead_letters",
        ["status", "group_key", "last_failed_at"],
        unique=False,
        postgresql_include=INCLUDED,
    )


def downgrade() -> None:
    op.drop_index("ix_dead_letters_groups", table_name="dead_letters", postgresql_include=INCLUDED)
    op.drop_column("dead_letters", "group_key")
    op.drop_column("dead_letters", "cause")
