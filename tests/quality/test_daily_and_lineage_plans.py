"""The two rarely read indexes of ``raw_records`` are cheap kinds (migration 0021), and still read:
the daily-quality job reads its window along the BRIN index on receipt time
(``ix_raw_records_received_at``), not the whole table, after summarizing the block ranges stored
since the last vacuum (and goes on without when it cannot have the lock); a key's lineage reads
along the hash index on the key (``ix_raw_records_natural_key``)."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from etl_app.jobs.days import Window, bounds
from etl_app.lineage import _RAW_HISTORY
from etl_app.models import sql
from etl_app.quality import daily
from etl_app.record_types import get_registry

from tests.helpers.plans import json_plan, scans

DAY = date(1987, 3, 2)
BEFORE = 30_000  # records received on the days before DAY, stored first (as time goes)
ON_DAY = 300


def _store_in_time_order(conn: sa.Connection) -> None:
    start = datetime.combine(DAY, datetime.min.time(), UTC) - timedelta(days=20)
    conn.execute(
        sa.text(
            "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, status, received_at) "
            "SELECT gen_random_uuid(), 'sessions', 'dp-' || n, '{\"session_id\": \"x\"}', 'persisted', "
            "CAST(:start AS timestamptz) + n * CAST(:step AS interval) "
            "FROM generate_series(0, :n - 1) AS n ORDER BY n"
        ),
        {"start": start, "step": timedelta(days=20) / BEFORE, "n": BEFORE},
    )
    conn.execute(
        sa.text(
            "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, status, received_at) "
            "SELECT gen_random_uuid(), 'sessions', 'dp-day-' || n, '{}', 'persisted', "
            "CAST(:day AS timestamptz) + n * interval '1 second' FROM generate_series(1, :n) AS n"
        ),
        {"day": datetime.combine(DAY, datetime.min.time(), UTC), "n": ON_DAY},
    )


def test_the_daily_window_is_read_along_the_receipt_time_index_once_summarized(engine):
    rt = get_registry()["sessions"]
    with engine.connect() as conn, conn.begin() as tx:
        _store_in_time_order(conn)
        conn.execute(sa.text("ANALYZE raw_records"))
        assert daily.summarize_receipt_ranges(conn) > 0
        params = {**bounds(Window(DAY, DAY)), "t": rt.name}
        read = scans(json_plan(conn, daily.measure_days(rt), params))
        assert ("Bitmap Index Scan", "ix_raw_records_received_at") in read
        assert ("Seq Scan", "raw_records") not in read
        measured = conn.execute(sql(f"SELECT k, accepted FROM ({daily.measure_days(rt)}) q"), params).all()
        assert [tuple(row) for row in measured] == [(DAY, ON_DAY)]  # the day's records, none of the days before
        tx.rollback()


def test_without_the_summary_lock_the_job_goes_on_and_keeps_its_lock_timeout(engine, monkeypatch, caplog):
    monkeypatch.setattr(daily, "SUMMARIZE_LOCK_TIMEOUT", "50ms")
    with engine.connect() as holder, holder.begin() as held, engine.connect() as conn, conn.begin() as tx:
        holder.execute(sa.text("LOCK TABLE raw_records IN SHARE UPDATE EXCLUSIVE MODE"))
        conn.execute(sa.text("SET LOCAL lock_timeout = '7s'"))
        with caplog.at_level(logging.WARNING, logger=daily.__name__):
            assert daily.summarize_receipt_ranges(conn) is None
        assert "not summarized" in caplog.text and "lock" in caplog.text
        assert conn.execute(sa.text("SHOW lock_timeout")).scalar_one() == "7s"
        # the transaction is still usable: the job measures on
        assert conn.execute(sa.text("SELECT count(*) FROM raw_records WHERE id < 0")).scalar_one() == 0
        tx.rollback()
        held.rollback()


def test_the_lineage_of_a_key_is_read_along_its_hash_index(engine):
    n_other_keys = 2_000

    with engine.connect() as conn, conn.begin() as tx:
        conn.execute(
            sa.text(
                "INSERT INTO raw_records (ingestion_id, record_type, natural_key, payload, status) "
                "SELECT gen_random_uuid(), 'sessions', 'ln-' || (n % :keys), '{}', 'persisted' "
                "FROM generate_series(1, :n) AS n"
            ),
            {"keys": n_other_keys, "n": n_other_keys * 3},
        )
        conn.execute(sa.text("ANALYZE raw_records"))
        read = scans(json_plan(conn, _RAW_HISTORY.text, {"t": "sessions", "k": "ln-7", "n": 51}))
        assert any(index == "ix_raw_records_natural_key" for _, index in read), read
        assert ("Seq Scan", "raw_records") not in read
        assert len(conn.execute(_RAW_HISTORY, {"t": "sessions", "k": "ln-7", "n": 51}).all()) == 3
        tx.rollback()
