"""raw_records leaves half of each page free (fillfactor 50) for the settled version of its rows

A record is inserted ``received`` and updated once when it settles (``persisted``, ``dead``).
``status`` is indexed, so that update is never HOT; with full pages its new version went to
another page, and PostgreSQL logged it whole (payload included). With room on the page, the new
version stays beside the old one and only the changed bytes are logged: about 500 bytes of WAL
a record less, and no relation extension while settling. The table takes the same space (each
record held two versions on two pages before); pages written before this migration keep their
rows as they are.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 08:30:00
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE raw_records SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE raw_records RESET (fillfactor)")
