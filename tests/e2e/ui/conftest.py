"""Browser tests of the operator's pages: headless Chromium (Debian's ``chromium`` package,
``/usr/bin/chromium``) driven by Playwright for Python, against gunicorn and a real
``celery worker`` on the local PostgreSQL and Redis.

- ``ui_stack``: the web (keys: the tests' admin key, an operator and a reader) and one worker,
  for the module;
- ``browser``: one Chromium for the session; ``page``: a fresh context and page per test
  (1280×800), closed afterwards;
- ``sign_in(page, role)``: through the sign-in form;
- ``screenshot(page, name)``: ``var/screenshots/<name>-desktop.png`` and, at 390 px wide,
  ``<name>-phone.png`` (test artifacts).

Chromium is installed by ``make test`` when it is missing (scripts/ensure-browser.sh); without it
these tests fail with that instruction rather than skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.procs import ROOT, Stack, running_stack
from tests.helpers.support import API_KEY, Api, redis_db

CHROMIUM = os.environ.get("ETL_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "var" / "screenshots"
UI_REDIS = redis_db(15)
UI_ENV = {"ETL_PARENT_WAIT_SECONDS": "8", "ETL_RETRY_BACKOFF_SECONDS": "1", "ETL_RETRY_BACKOFF_MAX_SECONDS": "2"}
KEYS = {"operator": f"ui-operator-{uuid.uuid4().hex[:12]}", "reader": f"ui-reader-{uuid.uuid4().hex[:12]}"}
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui_stack(request, database_url, tmp_path_factory) -> Iterator[Stack]:
    """The module's stack: web and worker with ``UI_ENV``, and the module's own ``STACK_ENV`` if it has one."""
    keys = ",".join([API_KEY, *(f"{key}:{role}" for role, key in KEYS.items())])
    env = {**UI_ENV, **getattr(request.module, "STACK_ENV", {})}
    with running_stack(database_url, UI_REDIS, tmp_path_factory.mktemp("logs"), **env) as s:
        s.env["ETL_API_KEYS"] = keys
        s.worker()
        s.web()
        yield s


@pytest.fixture(scope="module")
def api(ui_stack) -> Api:
    return Api(ui_stack.web_url)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (scripts/ensure-browser.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ui_stack):
    context = browser.new_context(viewport=DESKTOP, base_url=ui_stack.web_url)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    # script errors (a refused request's "Failed to load resource" is the server's answer, not one)
    tab.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    tab.script_errors = errors  # a test may assert there were none
    yield tab
    context.close()


@pytest.fixture
def sign_in() -> Callable:
    def run(tab, role: str = "operator", next_path: str | None = None) -> None:
        tab.goto("/ui/signin" + (f"?next={next_path}" if next_path else ""))
        tab.get_by_label("API key").fill(KEYS[role] if role in KEYS else role)
        tab.get_by_role("button", name="Sign in").click()
        tab.wait_for_load_state()
        assert "/ui/signin" not in tab.url, tab.content()[:2000]

    return run


@pytest.fixture
def screenshot() -> Callable:
    """``screenshot(page, name)``: the page at 1280×800 and at a phone's 390 px."""

    def run(tab, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        tab.set_viewport_size(DESKTOP)
        tab.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"))
        tab.set_viewport_size(PHONE)
        tab.wait_for_timeout(400)  # charts redraw on resize (Plotly's responsive mode)
        tab.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True)
        tab.set_viewport_size(DESKTOP)
        tab.wait_for_timeout(400)

    return run
