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


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 5, application_name: str = "etl_app") -> sa.Engine:
    """Create the engine (no connection is made until first use).

    A connection taken from the pool is pinged first (``SELECT 1``; a dead one is replaced, so a
    PostgreSQL restart costs no request) unless it went back to the pool less than
    ``PING_AFTER_IDLE_SECONDS`` ago: under load every connection is that fresh, and the ping
    was a round trip on every request. A connection that died in that half second fails its
    statement, which rolls it back, and the pool replaces every connection made before."""
    engine = sa.create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": application_name},
    )
    sa.event.listen(engine, "checkin", _note_idle)
    sa.event.listen(engine, "checkout", _ping_if_idle(engine.dialect))
    return engine


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
