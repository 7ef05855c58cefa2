"""etl_app.web.app.App: Flask, with the answer of ``ensure_sync`` remembered per plain function."""

from __future__ import annotations

import functools

import pytest
from flask import Flask

from etl_app.web import app as app_module
from etl_app.web.app import App

pytestmark = pytest.mark.unit


def test_a_plain_function_is_itself_and_remembered_up_to_the_bound(monkeypatch):
    monkeypatch.setattr(app_module, "SYNC_REMEMBERED", 2)
    app = App(__name__)

    def a():
        return "a"

    def b():
        return "b"

    def c():
        return "c"

    assert [app.ensure_sync(f) for f in (a, b, c, a, c)] == [a, b, c, a, c]
    assert set(app._synced) == {a, b}


def test_what_is_no_plain_function_is_asked_each_time_as_flask_does():
    app = App(__name__)
    partial = functools.partial(str, 1)
    assert app.ensure_sync(partial) is partial and app._synced == {}

    async def coroutine():
        return 1

    try:
        expected = Flask(__name__).ensure_sync(coroutine)
    except RuntimeError:  # Flask's async support needs asgiref: without it, the same refusal
        with pytest.raises(RuntimeError):
            app.ensure_sync(coroutine)
        return
    wrapped = app.ensure_sync(coroutine)
    assert wrapped is not coroutine and wrapped() == expected() == 1
    assert app.ensure_sync(coroutine) is wrapped  # remembered: the same wrapper


def test_the_factory_builds_one(app):
    assert isinstance(app, App)
