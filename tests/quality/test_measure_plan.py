"""The settler's quality measure reads an ingestion's records by the (ingestion_id, status) index
only. With the record type tested beside the ingestion ids, a plan made on statistics that do not
know the type's rows (a table just loaded, or autovacuum off) ANDed the ingestion's index entries
with every entry of the type in a record-type index: a read growing with the table, on every
settle (etl_app.quality.BY_INGESTIONS). Nor is an orphan's dead letter looked for in a hash of
every orphan's dead letter."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from etl_app.models import sql
from etl_app.quality import BY_INGESTIONS, quality_select
from etl_app.record_types import get_registry

from tests.helpers.plans import json_plan, scans

RECORDS = 3_000
_TYPE_INDEXES = ("ix_raw_records_natural_key", "ix_raw_records_received_at")


def test_the_measure_of_an_ingestion_never_reads_every_record_of_its_type(engine):
    rt = get_registry()["sessions"]
    with engine.connect() as conn, conn.begin() as tx:
        conn.execute(sa.text("ANALYZE raw_records"))  # before the rows below: the statistics do not know them
        ingestion = uuid.uuid4()
        conn.execute(
            sa.text(
                "INSERT INTO ingestions (id, record_type, source, accepted, rejected, created_at) "
                "VALUES (:ing, 'sessions', 'api', :n, 0, now())"
            ),
            {"ing": ingestion, "n": RECORDS},
        )
        conn.execute(
            sa.text(
                "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, status, received_at) "
                "SELECT CASE WHEN n <= 100 THEN :ing ELSE gen_random_uuid() END, 'sessions', 'mp-' || n, "
                "'{}', 'persisted', now() FROM generate_series(1, :n) AS n"
            ),
            {"ing": ingestion, "n": RECORDS},
        )
        dead = conn.execute(
            sa.text(
                "UPDATE raw_records SET status = 'dead' WHERE id IN (SELECT id FROM raw_records "
                "WHERE ingestion_id = :ing ORDER BY id LIMIT 2) RETURNING id"
            ),
            {"ing": ingestion},
        ).scalars()
        for raw_id, error_type in zip(sorted(dead), ("missing_parent", "validation"), strict=True):
            conn.execute(
                sa.text(
                    "INSERT INTO dead_letters (raw_record_id, ingestion_id, record_type, payload, error_type, error, "
                    "cause, task_name, status) VALUES (:id, :ing, 'sessions', '{}', :et, 'e: x', 'c', 't', 'open')"
                ),
                {"id": raw_id, "ing": ingestion, "et": error_type},
            )
        statement = quality_select(rt, **BY_INGESTIONS)
        plan = json_plan(conn, statement, {"t": rt.name, "ids": [ingestion]})
        measured = conn.execute(sql(f"SELECT count(*) FROM ({statement}) q"), {"t": rt.name, "ids": [ingestion]})
        rows = measured.scalar_one()
        integrity = conn.execute(
            sql(f"SELECT integrity, accepted FROM ({statement}) q"), {"t": rt.name, "ids": [ingestion]}
        ).one()
        tx.rollback()
    for index in _TYPE_INDEXES:
        assert index not in plan
    assert "ix_raw_records_ingestion_id_status" in plan
    # an orphan's dead letter is found by its record, not in a hash of every orphan's dead letter
    dead_letter_reads = {node for node, relation in scans(plan) if relation == "dead_letters"}
    assert dead_letter_reads and "Seq Scan" not in dead_letter_reads
    assert rows == 1  # the one ingestion, measured
    assert integrity == (0.99, 100)  # one orphan (missing_parent) of 100; a validation dead letter is none
