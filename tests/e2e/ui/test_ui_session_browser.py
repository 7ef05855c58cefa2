"""In a browser: signing in and out, the role's buttons, and the Jobs and Providers pages."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_sign_in_lands_on_the_asked_page_and_sign_out_ends_it(page, sign_in):
    page.goto("/ui/jobs")
    assert "/ui/signin" in page.url
    sign_in(page, "operator", next_path="/ui/jobs")
    assert page.url.endswith("/ui/jobs")
    assert page.get_by_role("heading", name="Jobs").is_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/signin")
    page.goto("/ui/jobs")
    assert "/ui/signin" in page.url


def test_a_wrong_key_is_told_so(page, sign_in):
    page.goto("/ui/signin")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().startswith("That key is not configured")


def test_a_reader_sees_no_action_button_and_its_post_is_refused(page, sign_in, screenshot):
    sign_in(page, "reader", next_path="/ui/jobs")
    assert page.get_by_role("button", name="Run now").count() == 0
    page.goto("/ui/providers")
    assert page.get_by_role("button", name="Reset breaker").count() == 0
    # a form forged in the page, with a valid CSRF token: the server refuses the role
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    status = page.evaluate(
        """async (token) => (await fetch('/ui/jobs/retention/run', {method: 'POST',
             headers: {'Content-Type': 'application/x-www-form-urlencoded'},
             body: 'csrf_token=' + encodeURIComponent(token)})).status""",
        token,
    )
    assert status == 403
    assert page.script_errors == []


def test_an_operator_runs_a_job_now_and_sees_its_run(page, sign_in, screenshot):
    sign_in(page, "operator", next_path="/ui/jobs")
    row = page.locator("tr[data-job='daily-quality']")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Run now").click()
    page.wait_for_load_state()
    assert "daily-quality queued" in page.get_by_role("status").inner_text()
    # the page polls: the run's outcome appears without a reload
    row = page.locator("tr[data-job='daily-quality'] .last-status .badge")
    row.wait_for(timeout=30_000)
    assert row.inner_text() in {"succeeded", "running", "skipped"}
    screenshot(page, "jobs")
    assert page.script_errors == []


def test_the_providers_page_shows_the_geocoder(page, sign_in, screenshot):
    sign_in(page, "operator", next_path="/ui/providers")
    row = page.locator("tr[data-provider='geocoder']")
    assert row.locator(".breaker .badge").inner_text() == "closed"
    screenshot(page, "providers")
    assert page.script_errors == []


def test_live_updates_stop_while_the_tab_is_hidden_and_resume_when_it_shows(page, sign_in):
    sign_in(page, "reader", next_path="/ui/jobs")
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if "/ui/api/" in request.url else None)
    page.wait_for_timeout(6_000)  # the Jobs page polls every 5 s
    assert polls, "the page did not poll while visible"
    page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
            Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "hidden"});
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    polls.clear()
    page.wait_for_timeout(11_000)
    assert polls == [], "the page polled while hidden"
    page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", {configurable: true, get: () => false});
            Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "visible"});
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    page.wait_for_timeout(1_000)
    assert polls, "the page did not poll again once visible"
