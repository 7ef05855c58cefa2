"""The benchmark's scratch services: database ``etl_app_bench`` (re-created, migrated) and Redis db 12."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
BENCH_DB = "etl_app_bench"


def database_url(server: str | None = None, name: str = BENCH_DB) -> str:
    """The bench database's URL on the server of BENCH_DATABASE_URL / DATABASE_URL_TEST (or localhost)."""
    server = server or os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL_TEST") or DEFAULT_SERVER
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def redis_url(url: str | None = None) -> str:
    return url or os.environ.get("BENCH_REDIS_URL") or DEFAULT_REDIS


def drop_database(url: str, *, create: bool = False) -> None:
    """Drop the database of ``url`` (ending its sessions first); with ``create``, create it again empty."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


def recreate_database(url: str) -> None:
    """Drop and create the database of ``url`` (ending its sessions first), then migrate it to head."""
    from etl_app.migrate import upgrade

    drop_database(url, create=True)
    upgrade(url)


def flush_redis(url: str) -> None:
    redis.Redis.from_url(url).flushdb()


def server_info(url: str) -> dict[str, str]:
    """PostgreSQL's version and the settings that decide commit cost."""
    with psycopg.connect(url) as conn:
        out = {"server_version": conn.execute("SHOW server_version").fetchone()[0]}
        for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections"):
            out[name] = conn.execute(f"SHOW {name}").fetchone()[0]
    return out


class BenchBusy(RuntimeError):
    """Another benchmark holds the same scratch database and Redis."""


@contextmanager
def exclusive(database_url: str, redis_url: str) -> Iterator[None]:
    """Hold the lock of this scratch database and Redis for the run: a second benchmark on the
    same ones (another terminal, another checkout) would drop the first one's data mid-phase, so it
    stops at once with :class:`BenchBusy` naming the process that holds them."""
    digest = hashlib.sha256(f"{database_url}\n{redis_url}".encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"etl_app_bench-{digest}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BenchBusy(f"another benchmark ({holder}) is using {database_url} and {redis_url}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
