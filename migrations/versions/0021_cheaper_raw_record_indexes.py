"""raw_records: the daily job's index by receipt time is a BRIN index, the lineage's index by key a hash index

Each raw record enters every index of raw_records twice: when it is stored, and when it settles
(the status change writes a new version of the row, which every index points to again). The two
btree indexes replaced here cost about 1.8 and 2.8 µs of PostgreSQL per entry. A BRIN index
costs nearly nothing per entry (a row stored in a block range not yet summarized costs nothing);
a hash index on the key alone about 1.2 µs.

- ``ix_raw_records_record_type_received_at`` (btree on type and receipt time), read once a
  day by the daily-quality job, becomes ``ix_raw_records_received_at`` (BRIN on receipt
  time): rows are stored in the order they are received, and a settled version lands a few
  seconds later, so each block range covers a short span of receipt times. The job summarizes
  the ranges stored since the last vacuum before it reads (etl_app.quality.daily).
- ``ix_raw_records_record_type_natural_key`` (btree on type, key, receipt time, id), read for
  one record's lineage, becomes ``ix_raw_records_natural_key`` (hash on the key): the lineage
  reads every raw record of the key and sorts them, which is the same work for the few records
  a key has.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 23:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Built and dropped CONCURRENTLY, outside the migration's transaction: on a deployment with a
    # large raw_records, a plain build would hold off every submit for as long as it reads the table.
    # A build stopped part-way leaves an invalid index of its name: dropped, so that a second run
    # builds it again rather than keep it.
    with op.get_context().autocommit_block():
        invalid = op.get_bind().execute(
            sa.text(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname IN ('ix_raw_records_received_at', 'ix_raw_records_natural_key') AND NOT i.indisvalid"
            )
        )
        for name in invalid.scalars().all():
            op.drop_index(name, table_name="raw_records", postgresql_concurrently=True)
        op.create_index(
            "ix_raw_records_received_at",
            "raw_records",
            ["received_at"],
            postgresql_using="brin",
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.create_index(
            "ix_raw_records_natural_key",
            "raw_records",
            ["natural_key"],
            postgresql_using="hash",
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.drop_index(
            "ix_raw_records_record_type_received_at",
            table_name="raw_records",
            postgresql_concurrently=True,
            if_exists=True,
        )
        op.drop_index(
            "ix_raw_records_record_type_natural_key",
            table_name="raw_records",
            postgresql_concurrently=True,
            if_exists=True,
        )


def downgrade() -> None:
    op.create_index(
        "ix_raw_records_record_type_natural_key",
        "raw_records",
        ["record_type", "natural_key", "received_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_raw_records_record_type_received_at", "raw_records", ["record_type", "received_at"], unique=False
    )
    op.drop_index("ix_raw_records_natural_key", table_name="raw_records", postgresql_using="hash")
    op.drop_index("ix_raw_records_received_at", table_name="raw_records", postgresql_using="brin")
