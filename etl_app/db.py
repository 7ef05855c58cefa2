"""Database wiring: the shared metadata, lineage columns and engine creation."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
TSTZ = sa.DateTime(timezone=True)  # every timestamp column: with its time zone


class Base(DeclarativeBase):
    """Declarative base for the service's own tables (outbox, ingestions, dead letters)."""

    metadata = metadata


def lineage_columns() -> list[sa.Column]:
    """The lineage columns every record-type table carries, in a fixed order."""
    return [
        sa.Column("ingestion_id", sa.Uuid, nullable=False, index=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enriched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("persisted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=True),
        sa.Column("raw_record_id", sa.BigInteger, nullable=True),
    ]


def extra_column() -> sa.Column:
    """The column holding a record's kept unknown fields (a schema contract's ``unknown=keep``,
    :mod:`etl_app.record_types.contract`): jsonb, null when none were kept. Never a typed field."""
    return sa.Column("extra", JSONB, nullable=True)


LINEAGE_FIELDS = (
    "ingestion_id",
    "received_at",
    "enriched_at",
    "persisted_at",
    "schema_version",
    "source",
    "raw_record_id",
)


def sqlalchemy_url(url: str) -> str:
    """Accept ``postgresql://`` / ``postgres://`` URLs as is and pin the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


# A pooled connection used this recently is handed out without a ping (HikariCP's
# aliveBypassWindowMs, 500 ms by default, is the same idea).
PING_AFTER_IDLE_SECONDS = 0.5


# A PostgreSQL connection silent this long is probed, in both directions (ETL_DB_KEEPALIVE_SECONDS).
DEFAULT_KEEPALIVE_SECONDS = 30
KEEPALIVE_PROBES = 3


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 5,
    application_name: str = "etl_app",
    keepalive_seconds: int = DEFAULT_KEEPALIVE_SECONDS,
) -> sa.Engine:
    """Create the engine (no connection is made until first use).

    A connection taken from the pool is pinged first (``SELECT 1``; a dead one is replaced, so a
    PostgreSQL restart costs no request) unless it went back to the pool less than
    ``PING_AFTER_IDLE_SECONDS`` ago: under load every connection is that fresh, and the ping
    was a round trip on every request. A connection that died in that half second fails its
    statement, which rolls it back, and the pool replaces every connection made before.

    ``keepalive_seconds`` (0: the operating system's defaults, 2 hours before the first probe):
    TCP keepalives on both ends of every connection. A connection silent that long is probed, then
    probed every third of it, and given up after :data:`KEEPALIVE_PROBES` unanswered probes, about
    twice ``keepalive_seconds`` after the peer went silent. Data sent and not acknowledged for
    twice ``keepalive_seconds`` ends it too (``tcp_user_timeout``; while data is outstanding no
    keepalive is sent, and the system's retransmissions take about 15 minutes to give up); a peer
    whose host answers but whose process is stopped is not given up.

    This end's settings are libpq parameters: a process waiting for an answer from a server whose
    host is cut off gets an error instead of waiting for good. The server's end is set on each new
    connection as soon as it is made, before anything else runs on it, SQLAlchemy's own first
    queries included (``SET tcp_keepalives_*``, one round trip; ignored over a Unix socket): the session
    of a client whose host is cut off in the middle of a transaction ends, and with it the
    transaction and its row locks, which the same records' redelivered tasks on other hosts would
    otherwise wait for until the link is back. The server's ``tcp_user_timeout`` needs PostgreSQL
    12. A session busy with a statement (waiting for a lock, say) reads nothing from its client
    meanwhile; on PostgreSQL 14 and later it also looks whether the client is still there every
    ``keepalive_seconds`` (``client_connection_check_interval``) and stops the statement when it
    is gone."""
    connect_args: dict[str, object] = {"connect_timeout": 5, "application_name": application_name}
    if keepalive_seconds > 0:
        interval, user_timeout_ms = max(1, keepalive_seconds // 3), 2 * keepalive_seconds * 1000
        connect_args |= {
            "keepalives": 1,
            "keepalives_idle": keepalive_seconds,
            "keepalives_interval": interval,
            "keepalives_count": KEEPALIVE_PROBES,
            "tcp_user_timeout": user_timeout_ms,
        }
    engine = sa.create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        connect_args=connect_args,
    )
    sa.event.listen(engine, "checkin", _note_idle)
    sa.event.listen(engine, "checkout", _ping_if_idle(engine.dialect))
    if keepalive_seconds > 0:
        sa.event.listen(engine, "do_connect", _server_keepalives(keepalive_seconds, interval, user_timeout_ms))
    return engine


def _server_keepalives(idle: int, interval: int, user_timeout_ms: int):
    """The ``do_connect`` listener that makes each connection and sets the server's end of
    :func:`make_engine`'s keepalives on it at once. A ``connect`` listener would run only after
    the dialect's first queries on the engine's first connection: a host cut off during those left
    a session "idle in transaction" that the server kept with the system's keepalives (2 hours)."""
    keepalives = (
        f"SET tcp_keepalives_idle = {idle}; SET tcp_keepalives_interval = {interval}; "
        f"SET tcp_keepalives_count = {KEEPALIVE_PROBES}"
    )
    user_timeout = f"; SET tcp_user_timeout = {user_timeout_ms}"  # PostgreSQL 12 and later
    check = f"; SET client_connection_check_interval = {idle * 1000}"  # PostgreSQL 14 and later

    def do_connect(dialect, record, cargs, cparams):
        dbapi_connection = dialect.connect(*cargs, **cparams)
        try:
            version = dbapi_connection.info.server_version  # known from the handshake: no round trip
            statement = keepalives + (user_timeout if version >= 120000 else "") + (check if version >= 140000 else "")
            dbapi_connection.execute(statement)  # several statements without parameters: one query
            dbapi_connection.commit()
        except BaseException:
            dbapi_connection.close()
            raise
        return dbapi_connection

    return do_connect


def _note_idle(dbapi_connection, record) -> None:
    record.info["etl_idle_since"] = time.monotonic()


def _ping_if_idle(dialect):
    def checkout(dbapi_connection, record, proxy) -> None:
        idle_since = record.info.get("etl_idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return  # a new connection, or one in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool throws this connection away and takes another
            raise sa.exc.DisconnectionError(f"the pooled connection did not answer a ping: {exc}") from exc

    return checkout
