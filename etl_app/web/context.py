"""What the API and the pages share of a request: the app's runtime, the request's key id and
request id, its actions audited under its key, and the error that becomes an HTTP answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import current_app, g, request

from etl_app import audit
from etl_app.dead_letters import actions
from etl_app.roles import ADMIN, ROLE_RIGHTS, SUBMIT
from etl_app.runtime import Runtime


class ApiError(Exception):
    """An error answer: status, machine-readable code, human message, optional details."""

    def __init__(
        self, status: int, error: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.extra = status, error, message, extra
        self.headers = headers or {}  # of the answer, e.g. Retry-After


def current_runtime() -> Runtime:
    """The runtime of the app handling this request."""
    return current_app.extensions["etl"]


def current_key_id() -> str | None:
    """The key id of the request's API key (None before authentication or on an open endpoint)."""
    return g.get("api_key_id")


def current_key_may_submit() -> bool:
    """Whether the request's key (an API key, or the pages' signed-in key) has the submit right:
    only such a key may change a dead letter's natural key by an edit."""
    role = g.get("api_key_role")
    return role is not None and (role == ADMIN or SUBMIT in ROLE_RIGHTS.get(role, ()))


def request_id() -> str | None:
    """The request's id, if it has one (set by the logging middleware, or sent as X-Request-ID)."""
    rid = g.get("request_id") or request.headers.get("X-Request-ID")
    return str(rid)[:200] if rid else None


def entry(action: str, target: dict[str, Any]) -> audit.Entry:
    """An audit entry of this request's key for ``action`` on ``target``."""
    return audit.Entry(current_key_id() or "unknown", action, target, request_id=request_id())


@contextmanager
def audited(action: str, target: dict[str, Any], count: int | None = 1) -> Iterator[tuple[sa.Connection, audit.Entry]]:
    """The action's transaction, audited (etl_app.audit.audited): the entry is this request's key's."""
    e = entry(action, target)
    e.count = count
    with audit.audited(current_runtime().engine, e) as conn:
        yield conn, e


def send_replayed(replayed: actions.Replayed) -> None:
    """Send the replayed records' chains, after the commit (this process's relay retries what
    the broker does not take now)."""
    runtime = current_runtime()
    actions.send_replayed(runtime.publisher, replayed, relay=runtime.relay)
