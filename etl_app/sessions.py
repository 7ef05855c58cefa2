"""Server-side sessions of the operator's pages: the signed cookie holds a random session id, and
``ui_sessions`` holds its SHA-256 (never the id itself), the key id it belongs to and when it
expires. A cookie counts only while its row exists and has not expired, so signing out (which
deletes the row) ends the session at once on every web process, however long the cookie's
signature would still be valid; so does removing the key from ETL_API_KEYS (its rows are deleted
at its next request). Expired rows are deleted as new sessions open.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from etl_app.db import TSTZ, Base


class UiSession(Base):
    """One signed-in session of the pages, by the digest of its id."""

    __tablename__ = "ui_sessions"
    __table_args__ = (
        sa.Index("ix_ui_sessions_key_id", "key_id"),
        sa.Index("ix_ui_sessions_expires_at", "expires_at"),
    )

    id_digest: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    key_id: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(TSTZ, server_default=sa.func.now())
    expires_at: Mapped[datetime] = mapped_column(TSTZ)


SESSIONS = UiSession.__table__


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(conn: sa.Connection, key_id: str, lifetime: timedelta) -> str:
    """A new session of ``key_id`` valid for ``lifetime``: its id, for the cookie."""
    session_id = secrets.token_urlsafe(32)
    conn.execute(sa.delete(SESSIONS).where(SESSIONS.c.expires_at <= sa.func.now()))
    conn.execute(
        sa.insert(SESSIONS).values(id_digest=_digest(session_id), key_id=key_id, expires_at=sa.func.now() + lifetime)
    )
    return session_id


def is_live(conn: sa.Connection, session_id: str, key_id: str) -> bool:
    """Whether ``session_id`` is a session of ``key_id`` that was neither closed nor expired."""
    return (
        conn.execute(
            sa.select(sa.literal(1)).where(
                SESSIONS.c.id_digest == _digest(session_id),
                SESSIONS.c.key_id == key_id,
                SESSIONS.c.expires_at > sa.func.now(),
            )
        ).first()
        is not None
    )


def close(conn: sa.Connection, session_id: str) -> None:
    """End this session (signing out)."""
    conn.execute(sa.delete(SESSIONS).where(SESSIONS.c.id_digest == _digest(session_id)))


def close_key(conn: sa.Connection, key_id: str) -> int:
    """End every session of ``key_id`` (a key no longer configured); how many there were."""
    return conn.execute(sa.delete(SESSIONS).where(SESSIONS.c.key_id == key_id)).rowcount
