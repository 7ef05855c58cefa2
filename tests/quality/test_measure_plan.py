"""The settler's quality measure reads an ingestion's records by the (ingestion_id, status) index
only. With the record type tested beside the ingestion ids, a plan made on statistics that do not
know the type's rows (a table just loaded, or autovacuum off) ANDed the ingestion's index entries
with every entry of the type in a record-type index: a read growing with the table, on every
settle (etl_app.quality.BY_INGESTIONS)."""

from __future__ import annotations

import uuid

import orjson
import sqlalchemy as sa

from etl_app.models import NAMED_VALUES, sql
from etl_app.quality import BY_INGESTIONS, quality_select
from etl_app.record_types import get_registry

RECORDS = 3_000
_TYPE_INDEXES = ("ix_raw_records_record_type_natural_key", "ix_raw_records_record_type_received_at")


def _plan(conn: sa.Connection, text: str, params: dict) -> str:
    for name in sorted(NAMED_VALUES, key=len, reverse=True):
        text = text.replace(f":{name}", f"'{NAMED_VALUES[name]}'")
    return orjson.dumps(conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {text}"), params).scalar_one()).decode()


def test_the_measure_of_an_ingestion_never_reads_every_record_of_its_type(engine):
    rt = get_registry()["students"]
    with engine.connect() as conn, conn.begin() as tx:
        conn.execute(sa.text("ANALYZE raw_records"))  # before the rows below: the statistics do not know them
        ingestion = uuid.uuid4()
        conn.execute(
            sa.text(
                "INSERT INTO ingestions (id, record_type, source, accepted, rejected, created_at) "
                "VALUES (:ing, 'students', 'api', :n, 0, now())"
            ),
            {"ing": ingestion, "n": RECORDS},
        )
        conn.execute(
            sa.text(
                "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, status, received_at) "
                "SELECT CASE WHEN n <= 100 THEN :ing ELSE gen_random_uuid() END, 'students', 'mp-' || n, "
                "'{}', 'persisted', now() FROM generate_series(1, :n) AS n"
            ),
            {"ing": ingestion, "n": RECORDS},
        )
        statement = quality_select(rt, **BY_INGESTIONS)
        plan = _plan(conn, statement, {"t": rt.name, "ids": [ingestion]})
        measured = conn.execute(sql(f"SELECT count(*) FROM ({statement}) q"), {"t": rt.name, "ids": [ingestion]})
        rows = measured.scalar_one()
        tx.rollback()
    for index in _TYPE_INDEXES:
        assert index not in plan
    assert "ix_raw_records_ingestion_id_status" in plan
    assert rows == 1  # the one ingestion, measured
