"""Signing in to the pages with an API key, the session cookie, CSRF and roles.

- The sign-in form takes a key of ``ETL_API_KEYS``; the session then holds its **key id** and role
  (never the key) and a random session id, which must name a live row of ``ui_sessions``
  (etl_app.sessions): signing out deletes it, so a copy of the cookie is worth nothing after.
  The cookie is Flask's signed session cookie: ``HttpOnly``, ``SameSite=Strict``, path ``/ui``,
  ``Secure`` when the request came over https (behind a proxy: ``X-Forwarded-Proto``, see
  docs/operator-pages.md), valid for 12 hours. Its signing key is
  ``ETL_SECRET_KEY``, or, when that is unset, derived from the configured API keys, so that every
  web process and host agrees and rotating the keys signs everyone out.
- Every request re-checks that the key id is still configured with that role and that its
  session is live: a key removed from ``ETL_API_KEYS`` is signed out at its next request, and its
  sessions are deleted then (adding the key back does not bring them back).
- Every POST carries a CSRF token (Flask-WTF's ``CSRFProtect``, checked for this blueprint
  only: the JSON API takes bearer keys, which a browser never sends by itself).
- A key needs the ``read`` right to sign in (an ``ingest`` key cannot); actions need
  ``operate``: a reader's POST is refused (403) and the refusal audited as the API does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Flask, abort, current_app, g, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

from etl_app import audit, sessions
from etl_app.roles import ADMIN, OPERATE, READ, ROLE_RIGHTS, parse_keys

log = logging.getLogger(__name__)

csrf = CSRFProtect()
SESSION_HOURS = 12
# Pages that answer without a session: the sign-in form and the assets.
OPEN_ENDPOINTS = frozenset({"ui.signin", "ui.signin_post", "ui.static", "ui.package_asset"})


@dataclass(frozen=True)
class User:
    """Who is signed in: a key id and its role."""

    key_id: str
    role: str

    def may(self, right: str) -> bool:
        return self.role == ADMIN or right in ROLE_RIGHTS[self.role]

    @property
    def operates(self) -> bool:
        return self.may(OPERATE)


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, ``Secure`` exactly when the request came over https.

    A request without the cookie (every API request: its path is ``/ui``) gets an empty session
    without building the signing serializer first, which Flask does on every request, and an
    empty session nobody touched is not saved (Flask would work out the cookie's attributes, then
    do nothing): about a sixth of the no-op endpoint's CPU in the process, the same answers."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure

    def open_session(self, app: Flask, request: Any) -> Any:
        # No Cookie header at all (every API request): no parsing of one either.
        no_cookie = "HTTP_COOKIE" not in request.environ or not request.cookies.get(self.get_cookie_name(app))
        if app.secret_key and no_cookie:
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        if not session and not session.modified and not session.accessed:
            return
        super().save_session(app, session, response)


def secret_key(configured: str | None, api_keys: tuple[str, ...]) -> str:
    """``ETL_SECRET_KEY`` when set; else a digest of the configured API keys."""
    if configured:
        return configured
    material = "\n".join(sorted(api_keys))
    return hashlib.sha256(f"etl_app ui session\n{material}".encode()).hexdigest()


def init_app(app: Flask) -> None:
    settings = app.extensions["etl"].settings
    app.secret_key = secret_key(os.environ.get("ETL_SECRET_KEY", "").strip(), tuple(settings.api_keys))
    app.session_interface = _SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="etl_ui",
        SESSION_COOKIE_PATH="/ui",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        WTF_CSRF_CHECK_DEFAULT=False,  # checked by the ui blueprint only
        WTF_CSRF_TIME_LIMIT=SESSION_HOURS * 3600,
    )
    csrf.init_app(app)


def current_user() -> User | None:
    """The signed-in user of this request (None before sign-in)."""
    return g.get("ui_user")


def keys_by_id() -> dict[str, str]:
    """Key id → role of every configured API key."""
    settings = current_app.extensions["etl"].settings
    return {key.id: key.role for key in parse_keys(settings.api_keys)}


def authenticate() -> Any:
    """The blueprint's ``before_request``: a page needs a signed-in key with the ``read`` right, a
    POST also a valid CSRF token."""
    if request.endpoint in OPEN_ENDPOINTS:
        if request.method == "POST":
            csrf.protect()
        return None
    key_id, role, session_id = session.get("key_id"), session.get("role"), session.get("sid")
    configured = keys_by_id()
    if key_id is not None and key_id not in configured:
        with _engine().begin() as conn:  # a key that is no longer configured: its sessions end
            sessions.close_key(conn, key_id)
    if key_id is None or configured.get(key_id) != role or not _live(session_id, key_id):
        session.clear()
        if request.method == "GET" and not request.path.startswith("/ui/api/"):
            return redirect(url_for("ui.signin", next=request.full_path.rstrip("?")))
        abort(401)
    user = User(key_id, role)
    if not user.may(READ):
        session.clear()
        abort(403)
    g.ui_user = user
    g.api_key_id, g.api_key_role = key_id, role  # the audit trail and the logs name this key, as for the API
    if request.method == "POST":
        csrf.protect()
    return None


def _engine():
    return current_app.extensions["etl"].engine


def _live(session_id: Any, key_id: str) -> bool:
    if not isinstance(session_id, str) or not session_id:
        return False
    with _engine().connect() as conn:
        return sessions.is_live(conn, session_id, key_id)


def requires_operate(action: str | None = None, target: Callable[..., dict] | None = None):
    """A view that acts: a key without ``operate`` gets 403, and a refused ``action`` (one of
    etl_app.audit.ACTIONS) is written to the audit trail with ``target(**view_args)``."""

    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            user = current_user()
            if user is None or not user.operates:
                if action is not None and user is not None:
                    _audit_refusal(user, action, (target or (lambda **kw: kw))(**kwargs))
                abort(403)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _audit_refusal(user: User, action: str, target: dict) -> None:
    entry = audit.Entry(user.key_id, action, {"path": request.path, **target}, None, audit.REFUSED, f"role {user.role}")
    audit.record_alone(current_app.extensions["etl"].engine, entry)


# C0 controls, DEL and C1 controls: never part of a path to go to (a CR/LF would split the Location).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path under /ui/ of this site, never another site, and
    without control characters, as sent or percent-encoded (else the overview)."""
    if target and not _CONTROL.search(target) and not _CONTROL.search(unquote(target)):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/ui/") and "\\" not in target:
            return target
    return url_for("ui.overview")


def sign_in(key: str) -> User | None:
    """The user of this key, remembered in the session; None for a key that is not configured or
    cannot read."""
    from etl_app.roles import find_key

    settings = current_app.extensions["etl"].settings
    found = find_key(key.strip(), parse_keys(settings.api_keys)) if key.strip() else None
    if found is None:
        return None
    user = User(found.id, found.role)
    if not user.may(READ):
        return None
    session.clear()
    session.permanent = True
    with _engine().begin() as conn:
        session_id = sessions.open_session(conn, user.key_id, timedelta(hours=SESSION_HOURS))
    session["key_id"], session["role"], session["sid"] = user.key_id, user.role, session_id
    log.info("ui: key %s (%s) signed in", user.key_id, user.role)
    return user


def sign_out() -> None:
    """End this session: its row is deleted, so the cookie, or any copy of it, is signed out."""
    session_id = session.get("sid")
    if isinstance(session_id, str) and session_id:
        with _engine().begin() as conn:
            sessions.close(conn, session_id)
        log.info("ui: key %s signed out", session.get("key_id"))
    session.clear()
