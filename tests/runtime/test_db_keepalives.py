"""TCP keepalives on both ends of the engine's connections (etl_app.db.make_engine,
ETL_DB_KEEPALIVE_SECONDS): the server's settings as the session shows them, the client's as
libpq holds them, and nothing changed when they are off."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from etl_app import db
from etl_app.config import Settings

SHOW = sa.text(
    "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'), "
    "current_setting('tcp_keepalives_count'), current_setting('tcp_user_timeout')"
)
CHECK = sa.text("SELECT current_setting('client_connection_check_interval', true)")


def _over_tcp(database_url: str) -> str:
    """The test database's URL; the test is skipped when it names no host (a Unix socket, where
    PostgreSQL ignores the keepalive settings)."""
    if not sa.engine.make_url(database_url).host:
        pytest.skip("the test database is reached through a Unix socket")
    return database_url


def test_the_server_probes_a_silent_client_and_the_client_a_silent_server(database_url):
    engine = db.make_engine(_over_tcp(database_url), pool_size=1, max_overflow=0, keepalive_seconds=12)
    try:
        with engine.connect() as conn:
            assert conn.execute(SHOW).one() == ("12", "4", "3", "24000")
            if conn.connection.dbapi_connection.info.server_version >= 140000:
                assert conn.execute(CHECK).scalar() == "12s"  # a busy session looks for its client too
            params = conn.connection.dbapi_connection.info.get_parameters()
            # libpq's own: what this end does with a server that went silent
            dsn = conn.connection.dbapi_connection.info.dsn
            for part in ("keepalives=1", "keepalives_idle=12", "keepalives_interval=4", "keepalives_count=3"):
                assert part in dsn, dsn
            assert "tcp_user_timeout=24000" in dsn, dsn
            assert params["application_name"] == "etl_app"
    finally:
        engine.dispose()


def test_the_server_probes_from_the_first_query_of_a_new_engine(database_url):
    """SQLAlchemy's own first queries on a new engine's first connection (the dialect's
    ``first_connect``) run under the keepalives already: a host cut off while they run leaves no
    session the server keeps for the system's 2 hours."""
    engine = db.make_engine(_over_tcp(database_url), pool_size=1, max_overflow=0, keepalive_seconds=12)
    seen = []

    @sa.event.listens_for(engine, "first_connect", insert=True)
    def first(dbapi_connection, _record) -> None:
        seen.append(dbapi_connection.execute(SHOW.text).fetchone()[:3])
        dbapi_connection.rollback()

    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        assert seen == [("12", "4", "3")]
    finally:
        engine.dispose()


def test_zero_keeps_the_systems_defaults(database_url):
    with psycopg.connect(_over_tcp(database_url)) as plain:
        system = plain.execute(SHOW.text).fetchone()  # the server's values: the operating system's
    engine = db.make_engine(database_url, pool_size=1, max_overflow=0, keepalive_seconds=0)
    try:
        with engine.connect() as conn:
            assert conn.execute(SHOW).one() == system
            assert "keepalives_idle" not in conn.connection.dbapi_connection.info.dsn
    finally:
        engine.dispose()


def test_the_setting_is_read_and_checked():
    assert Settings.from_env({"DATABASE_URL": "postgresql://x/y"}).db_keepalive_seconds == 30
    settings = Settings.from_env({"DATABASE_URL": "postgresql://x/y", "ETL_DB_KEEPALIVE_SECONDS": "7"})
    assert settings.db_keepalive_seconds == 7
    with pytest.raises(ValueError, match="ETL_DB_KEEPALIVE_SECONDS"):
        Settings.from_env({"DATABASE_URL": "postgresql://x/y", "ETL_DB_KEEPALIVE_SECONDS": "-1"}).check()
