"""The engine's pool pings a connection that sat idle before handing it out, and skips the ping
for one used a moment ago (etl_app.db.make_engine)."""

from __future__ import annotations

import time

import psycopg
import pytest
import sqlalchemy as sa

from etl_app import db

PID = sa.text("SELECT pg_backend_pid()")


def _terminate(database_url: str, pid: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.fixture
def engine(database_url):
    eng = db.make_engine(database_url, pool_size=1, max_overflow=0)
    yield eng
    eng.dispose()


def test_a_connection_that_died_while_idle_is_replaced_without_an_error(engine, database_url, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.05)
    with engine.connect() as conn:
        first = conn.execute(PID).scalar()
    _terminate(database_url, first)  # as a PostgreSQL restart would
    time.sleep(0.1)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        second = conn.execute(PID).scalar()
    assert second != first


def test_a_connection_used_a_moment_ago_is_not_pinged(engine, database_url, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 60)
    pings = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(1) or real_ping(c))
    for _ in range(5):
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    assert pings == []
    # so one that died in that moment fails its statement, and the pool starts afresh
    with engine.connect() as conn:
        pid = conn.execute(PID).scalar()
    _terminate(database_url, pid)
    with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
        conn.execute(PID)
    with engine.connect() as conn:
        assert conn.execute(PID).scalar() != pid
