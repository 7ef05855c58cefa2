"""dead letters edited before a replay: the payload as it was and as corrected, by which key
(dead_letter_edits), and a group's dead letters newest first from an index

Revision ID: 0015
Revises: 0014
Create Date: 2027-01-16 10:00:00

Rows of dead_letters whose cause the normaliser of this version writes differently (the key of a
``<record type>:<key>`` reference became ``<key>``: etl_app.dead_letters.causes) get it again, in
batches of 5,000 by id, so that missing parents of keys without digits form one group; only
messages holding a colon are read. The index is built with the table locked for writes: 100,000
dead letters take well under a second.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from etl_app.dead_letters.causes import normalise

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BATCH = 5000


def _refresh_causes(conn: sa.Connection) -> None:
    after = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT id, error, cause FROM dead_letters WHERE id > :after AND strpos(error, ':') > 0 "
                "ORDER BY id LIMIT :batch"
            ),
            {"after": after, "batch": BATCH},
        ).all()
        if not rows:
            return
        changed = [(r.id, normalise(r.error)) for r in rows if normalise(r.error) != r.cause]
        if changed:
            conn.execute(
                sa.text(
                    "UPDATE dead_letters d SET cause = f.cause "
                    "FROM unnest(CAST(:ids AS bigint[]), CAST(:causes AS text[])) AS f(id, cause) WHERE d.id = f.id"
                ),
                {"ids": [i for i, _ in changed], "causes": [c for _, c in changed]},
            )
        after = rows[-1].id


def upgrade() -> None:
    op.create_table(
        "dead_letter_edits",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("dead_letter_id", sa.BigInteger(), nullable=False),
        sa.Column("raw_record_id", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("original", JSONB(), nullable=False),
        sa.Column("edited", JSONB(), nullable=False),
        sa.ForeignKeyConstraint(["dead_letter_id"], ["dead_letters.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_dead_letter_edits_dead_letter_id_id", "dead_letter_edits", ["dead_letter_id", "id"], unique=False
    )
    op.create_index(
        "ix_dead_letters_group_key_status_id", "dead_letters", ["group_key", "status", "id"], unique=False
    )
    _refresh_causes(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_dead_letters_group_key_status_id", table_name="dead_letters")
    op.drop_index("ix_dead_letter_edits_dead_letter_id_id", table_name="dead_letter_edits")
    op.drop_table("dead_letter_edits")
