"""The operator's pages: sign-in, the session cookie, CSRF, roles, assets and headers
(etl_app.ui.session, etl_app.ui.blueprint), and the Jobs and Providers pages. Real PostgreSQL and
Redis; Flask's test client. The browser tests are under tests/e2e/ui/."""

from __future__ import annotations

import uuid

import pytest
import redis
import sqlalchemy as sa

from etl_app.roles import key_id

from tests.helpers.support import API_KEY
from tests.helpers.ui import csrf_token, post_form, sign_in

KEYS = {role: f"ui-{role}-{uuid.uuid4().hex[:8]}" for role in ("ingest", "reader", "operator")}


@pytest.fixture
def ui_app(make_app):
    return make_app(api_keys=(API_KEY, *(f"{key}:{role}" for role, key in KEYS.items())))


@pytest.fixture
def browser(ui_app):
    return ui_app.test_client()


def audit_of(engine, action: str, key: str) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT outcome, target FROM audit WHERE action = :a AND key_id = :k ORDER BY id"),
            {"a": action, "k": key_id(key)},
        ).all()


def test_a_page_without_a_session_sends_to_the_sign_in_form_and_its_data_is_401(browser):
    r = browser.get("/ui/jobs?x=1")
    assert r.status_code == 302 and r.headers["Location"] == "/ui/signin?next=/ui/jobs?x%3D1"
    assert browser.get("/ui/api/jobs").status_code == 401
    assert browser.get("/ui/signin").status_code == 200


def test_signing_in_with_a_key_sets_a_strict_http_only_cookie_that_names_no_key(browser):
    r = sign_in(browser, KEYS["operator"], next="/ui/providers")
    assert r.status_code == 302 and r.headers["Location"] == "/ui/providers"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("etl_ui=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http here
    assert KEYS["operator"] not in cookie
    page = browser.get("/ui/jobs").get_data(as_text=True)
    assert f"{key_id(KEYS['operator'])} · operator" in page


def test_over_https_the_cookie_is_secure(ui_app):
    client = ui_app.test_client()
    token = csrf_token(client)
    r = client.post("/ui/signin", data={"key": KEYS["reader"], "csrf_token": token}, base_url="https://localhost")
    # over https the CSRF check also wants a Referer of this host (Flask-WTF's strict mode)
    assert r.status_code == 400
    r = client.post(
        "/ui/signin",
        data={"key": KEYS["reader"], "csrf_token": token},
        base_url="https://localhost",
        headers={"Referer": "https://localhost/ui/signin"},
    )
    assert r.status_code == 302
    assert "Secure" in r.headers["Set-Cookie"]


@pytest.mark.parametrize("key", ["not-a-key", "", KEYS["ingest"]])
def test_a_wrong_key_or_one_that_cannot_read_is_refused(browser, key):
    r = sign_in(browser, key)
    assert r.status_code == 401
    assert "not configured, or its role cannot read" in r.get_data(as_text=True)
    assert browser.get("/ui/jobs").status_code == 302


def test_a_post_without_its_csrf_token_is_refused(browser, ui_app):
    sign_in(browser, KEYS["operator"])
    r = browser.post("/ui/jobs/retention/run", data={})
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    r = browser.post("/ui/signin", data={"key": KEYS["operator"]})  # signing in too
    assert r.status_code == 400


def test_after_sign_in_it_goes_only_to_a_page_of_this_site(browser):
    for target in ("https://evil.example/ui/x", "//evil.example/ui/", "/api/v1/dead-letters", "/ui\\@evil"):
        r = sign_in(browser, KEYS["reader"], next=target)
        assert r.headers["Location"] == "/ui/overview", target


@pytest.mark.parametrize(
    "target",
    [
        "/ui/jobs%0d%0aSet-Cookie:%20x=1",
        "/ui/jobs\r\nSet-Cookie: x=1",
        "/ui/jobs\x00",
        "/ui/jobs\x7f",
        "/ui/jobs\x85",
        "/ui/jobs%c2%85",
        "/ui/jobs%09",
        "/ui/jobs%7F",
    ],
    ids=["percent-crlf", "raw-crlf", "nul", "del", "c1", "percent-c1", "percent-tab", "percent-del"],
)
def test_after_sign_in_a_next_with_control_characters_goes_to_the_overview(browser, target):
    r = sign_in(browser, KEYS["reader"], next=target)
    assert r.status_code == 302 and r.headers["Location"] == "/ui/overview"
    assert "Set-Cookie: x" not in str(r.headers) and browser.get("/ui/jobs").status_code == 200


def test_signing_out_ends_the_session(browser):
    sign_in(browser, KEYS["reader"])
    assert browser.get("/ui/jobs").status_code == 200
    r = post_form(browser, "/ui/signout", "/ui/jobs")
    assert r.status_code == 302
    assert browser.get("/ui/jobs").status_code == 302


def test_after_sign_out_a_copy_of_the_old_cookie_is_signed_out_too(ui_app, engine):
    browser = ui_app.test_client()
    sign_in(browser, KEYS["operator"])
    assert browser.get("/ui/jobs").status_code == 200
    stolen = browser.get_cookie("etl_ui", path="/ui").value
    live = sessions_of(engine, KEYS["operator"])
    assert post_form(browser, "/ui/signout", "/ui/jobs").status_code == 302
    assert sessions_of(engine, KEYS["operator"]) == live - 1  # its row is gone
    replay = ui_app.test_client()
    replay.set_cookie("etl_ui", stolen, path="/ui")
    r = replay.get("/ui/jobs")
    assert r.status_code == 302 and "/ui/signin" in r.headers["Location"]
    assert replay.get("/ui/api/ingestions").status_code == 401
    assert replay.post("/ui/jobs/retention/run").status_code in (400, 401)  # no session, whatever the CSRF


def sessions_of(engine, key: str) -> int:
    with engine.connect() as conn:
        query = sa.text("SELECT count(*) FROM ui_sessions WHERE key_id = :k AND expires_at > now()")
        return conn.execute(query, {"k": key_id(key)}).scalar_one()


def test_a_key_removed_and_added_back_does_not_bring_its_old_sessions_back(make_app, monkeypatch):
    monkeypatch.setenv("ETL_SECRET_KEY", "a-fixed-secret-for-this-test")
    key = f"ui-comeback-{uuid.uuid4().hex[:8]}"
    first = make_app(api_keys=(f"{key}:reader",))
    client = first.test_client()
    sign_in(client, key)
    assert client.get("/ui/jobs").status_code == 200
    cookie = client.get_cookie("etl_ui", path="/ui").value
    second = make_app(api_keys=(API_KEY,))  # the key gone: its session ends
    other = second.test_client()
    other.set_cookie("etl_ui", cookie, path="/ui")
    assert other.get("/ui/jobs").status_code == 302
    client.set_cookie("etl_ui", cookie, path="/ui")  # the key back: the old session stays ended
    assert client.get("/ui/jobs").status_code == 302


def test_a_key_removed_from_the_configuration_is_signed_out_at_its_next_request(make_app, monkeypatch):
    monkeypatch.setenv("ETL_SECRET_KEY", "a-fixed-secret-for-this-test")
    first = make_app(api_keys=(f"{KEYS['reader']}:reader",))
    client = first.test_client()
    sign_in(client, KEYS["reader"])
    assert client.get("/ui/jobs").status_code == 200
    second = make_app(api_keys=(API_KEY,))  # the same secret, the key gone
    cookie = client.get_cookie("etl_ui", path="/ui")
    other = second.test_client()
    other.set_cookie("etl_ui", cookie.value, path="/ui")
    assert other.get("/ui/jobs").status_code == 302


def test_a_reader_sees_no_action_and_its_posts_are_refused_and_audited(browser, engine):
    sign_in(browser, KEYS["reader"])
    page = browser.get("/ui/jobs").get_data(as_text=True)
    assert "retention" in page and "Run now" not in page
    assert "Reset breaker" not in browser.get("/ui/providers").get_data(as_text=True)
    r = post_form(browser, "/ui/jobs/retention/run", "/ui/jobs")
    assert r.status_code == 403
    assert audit_of(engine, "job_run", KEYS["reader"])[-1] == (
        "refused",
        {"path": "/ui/jobs/retention/run", "job": "retention"},
    )
    r = post_form(browser, "/ui/providers/geocoder/reset", "/ui/jobs")
    assert r.status_code == 403
    assert audit_of(engine, "breaker_reset", KEYS["reader"])[-1][0] == "refused"


def test_run_now_queues_the_job_on_the_jobs_queue(browser, api_redis_url, broker_prefix):
    sign_in(browser, KEYS["operator"])
    page = browser.get("/ui/jobs").get_data(as_text=True)
    assert page.count("Run now") >= 5
    queue = redis.Redis.from_url(api_redis_url)
    before = queue.llen(f"{broker_prefix}jobs")
    r = post_form(browser, "/ui/jobs/retention/run", "/ui/jobs")
    assert r.status_code == 302 and r.headers["Location"] == "/ui/jobs"
    assert queue.llen(f"{broker_prefix}jobs") == before + 1
    assert "retention queued (task " in browser.get("/ui/jobs").get_data(as_text=True)
    r = post_form(browser, "/ui/jobs/nope/run", "/ui/jobs")
    assert r.status_code == 404


def test_an_operator_resets_a_breaker_from_the_providers_page(browser, engine):
    sign_in(browser, KEYS["operator"])
    page = browser.get("/ui/providers").get_data(as_text=True)
    assert "geocoder" in page and "Reset breaker" in page
    r = post_form(browser, "/ui/providers/geocoder/reset", "/ui/providers")
    assert r.status_code == 302
    assert "The breaker of geocoder is closed" in browser.get("/ui/providers").get_data(as_text=True)
    assert audit_of(engine, "breaker_reset", KEYS["operator"])[-1] == ("ok", {"provider": "geocoder"})


def test_pages_forbid_inline_script_and_framing_and_serve_plotly_from_its_package(browser):
    sign_in(browser, KEYS["reader"])
    r = browser.get("/ui/jobs")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "<script>" not in r.get_data(as_text=True)  # no inline script
    asset = browser.get("/ui/assets/plotly.min.js")
    assert asset.status_code == 200 and b"plotly.js" in asset.data[:2000]
    assert browser.get("/ui/assets/nope.js").status_code == 404
    assert browser.get("/ui/static/ui.js").status_code == 200


def test_a_missing_page_says_so_on_a_page_not_in_json(browser):
    sign_in(browser, KEYS["reader"])
    r = browser.get("/ui/jobs/nope/run")  # a GET of an action's address
    assert r.status_code in (404, 405)
    r = browser.get("/ui/assets/nope.js")
    assert r.status_code == 404 and "There is nothing at this address." in r.get_data(as_text=True)


def test_counts_on_the_pages_say_one_attempt_and_two_attempts():
    from etl_app.ui.blueprint import counted

    assert [counted(n, "attempt") for n in (0, 1, 2, 1200)] == [
        "0 attempts",
        "1 attempt",
        "2 attempts",
        "1,200 attempts",
    ]
