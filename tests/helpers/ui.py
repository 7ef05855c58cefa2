"""Signing in to the operator's pages from Flask's test client."""

from __future__ import annotations

import re

from flask.testing import FlaskClient

_TOKEN = re.compile(r'name="csrf-token" content="([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/ui/signin") -> str:
    """The CSRF token a page of ``path`` carries (its layout's meta tag)."""
    r = client.get(path)
    assert r.status_code == 200, r.status_code
    return _TOKEN.search(r.get_data(as_text=True)).group(1)


def sign_in(client: FlaskClient, key: str, **form: str):
    """POST the sign-in form with ``key``; the response."""
    return client.post("/ui/signin", data={"key": key, "csrf_token": csrf_token(client), **form})


def post_form(client: FlaskClient, path: str, page: str, **form: str):
    """POST ``form`` to ``path`` with the CSRF token of ``page`` (as a browser would)."""
    return client.post(path, data={"csrf_token": csrf_token(client, page), **form})
