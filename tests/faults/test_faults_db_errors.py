"""Database errors are sorted the same whether SQLAlchemy wraps them or psycopg raises them
itself, as it does inside the COPY that persist (and the outbox) run on the driver's cursor."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest
import sqlalchemy as sa

from etl_app import errors

pytestmark = pytest.mark.slow


def raised(engine: sa.Engine, work: Callable[[sa.Connection], None]) -> BaseException:
    try:
        with engine.begin() as conn:
            work(conn)
    except Exception as exc:  # noqa: BLE001 - the point is to look at it
        return exc
    raise AssertionError("no error")


def copy_rows(conn: sa.Connection, rows: list[tuple], pause: float = 0.0) -> None:
    conn.exec_driver_sql("CREATE TEMP TABLE copy_target (n integer) ON COMMIT DROP")
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy("COPY copy_target (n) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            time.sleep(pause)


def test_a_statement_cancelled_inside_a_copy_is_transient_as_it_is_through_sqlalchemy(fault_engine):
    """A cancelled statement (statement_timeout here; pg_cancel_backend or lock_timeout alike)
    is worth retrying; it must not split the chunk and dead-letter its records."""

    def in_copy(conn: sa.Connection) -> None:
        conn.exec_driver_sql("SET LOCAL statement_timeout = '200ms'")
        copy_rows(conn, [(1,), (2,)], pause=0.6)

    def in_query(conn: sa.Connection) -> None:
        conn.exec_driver_sql("SET LOCAL statement_timeout = '200ms'")
        conn.exec_driver_sql("SELECT pg_sleep(2)")

    raw, wrapped = raised(fault_engine, in_copy), raised(fault_engine, in_query)
    assert isinstance(raw, psycopg.errors.QueryCanceled) and not isinstance(raw, sa.exc.DBAPIError)
    assert isinstance(wrapped, sa.exc.OperationalError)
    assert errors.classify(wrapped) is errors.DatabaseUnavailable
    assert errors.classify(raw) is errors.DatabaseUnavailable


def test_a_value_the_database_refuses_inside_a_copy_is_a_persistence_error(fault_engine):
    raw = raised(fault_engine, lambda conn: copy_rows(conn, [("not a number",)]))
    wrapped = raised(fault_engine, lambda conn: conn.exec_driver_sql("SELECT CAST('not a number' AS integer)"))
    assert isinstance(raw, psycopg.DataError) and not isinstance(raw, sa.exc.DBAPIError)
    assert errors.classify(wrapped) is errors.RecordRefused
    assert errors.classify(raw) is errors.RecordRefused
    assert errors.error_type_of(raw) == errors.PERSISTENCE
