"""In a browser: /docs (Swagger UI) under its Content-Security-Policy, with the API key kept for
the tab only and a way to change or forget it."""

from __future__ import annotations

import pytest

from tests.helpers.support import API_KEY

pytestmark = pytest.mark.slow


def _answer_prompts_with(page, answers: list[str]) -> None:
    page.on("dialog", lambda dialog: dialog.accept(answers.pop(0)) if answers else dialog.dismiss())


def test_docs_keeps_the_key_for_the_tab_only_and_can_change_or_forget_it(page, browser, ui_stack):
    _answer_prompts_with(page, [API_KEY, "a-mistyped-key", API_KEY])
    page.goto("/docs")
    page.locator(".opblock").first.wait_for()  # the document loaded with the key: its operations listed
    assert page.get_by_text("/api/v1/record-types").first.is_visible()
    assert page.evaluate("sessionStorage.getItem('etlApiKey')") == API_KEY
    assert page.evaluate("localStorage.getItem('etlApiKey')") is None
    assert page.locator("#key-status").inner_text() == "An API key is set for this tab."

    page.get_by_role("button", name="Forget key").click()
    assert page.evaluate("sessionStorage.getItem('etlApiKey')") is None
    assert page.locator("#key-status").inner_text() == "No API key set."

    page.get_by_role("button", name="Change key").click()  # a mistyped key can be corrected in place
    assert page.evaluate("sessionStorage.getItem('etlApiKey')") == "a-mistyped-key"
    page.get_by_role("button", name="Change key").click()
    assert page.evaluate("sessionStorage.getItem('etlApiKey')") == API_KEY
    page.locator(".opblock").first.wait_for()
    csp_refusals = [e for e in page.script_errors if "Content Security Policy" in e]
    assert csp_refusals == [], csp_refusals

    # another tab of a new browser session starts without it; a key an old version kept for good is dropped
    other = browser.new_context(base_url=ui_stack.web_url)
    try:
        tab = other.new_page()
        tab.add_init_script("localStorage.setItem('etlApiKey', 'kept-for-good')")
        tab.on("dialog", lambda dialog: dialog.dismiss())
        tab.goto("/docs")
        assert tab.locator("#key-status").inner_text() == "No API key set."
        assert tab.evaluate("localStorage.getItem('etlApiKey')") is None
    finally:
        other.close()
