"""tutors get the geocoder's fields (country, country_code, timezone, latitude, longitude) and the
lookup's outcome (lookup_status, looked_up_at); null for tutors stored before

Revision ID: 0011
Revises: 0010
Create Date: 2027-01-11 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

COLUMNS = (
    ("country", sa.Text),
    ("country_code", sa.Text),
    ("timezone", sa.Text),
    ("latitude", sa.Double),
    ("longitude", sa.Double),
    ("lookup_status", sa.Text),
    ("looked_up_at", lambda: sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    for name, type_ in COLUMNS:
        op.add_column("tutors", sa.Column(name, type_(), nullable=True))


def downgrade() -> None:
    for name, _ in reversed(COLUMNS):
        op.drop_column("tutors", name)
