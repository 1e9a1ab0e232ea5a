"""The admin page in a real browser: an operator turns rate limiting off and on again.

Headless Chromium from the system packages (``/usr/bin/chromium``), driven by Playwright,
against the agent app in its own uvicorn process on a real Redis.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.support.servers import UvicornServer, require_binary

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ADMIN_NAME = "ops"
ADMIN_TOKEN = secrets.token_urlsafe(24)  # 32 characters
# The machine has no network: these keep Chromium from calling Google's services.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def agent(redis_url: str) -> Iterator[UvicornServer]:
    env = {
        "TOOLKIT_ADMIN__TOKENS": json.dumps({ADMIN_NAME: ADMIN_TOKEN}),
        "TOOLKIT_BACKEND__URL": redis_url,
        "TOOLKIT_RATELIMIT__ROUTES": json.dumps({"/limited": "2/minute"}),
    }
    with UvicornServer("tests.apps.agent:app", env=env) as server:
        yield server


@pytest.fixture
def page(agent: UvicornServer) -> Iterator[Page]:
    """A browser tab that answers the admin page's Basic challenge as ``ops``."""
    chromium = require_binary("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(
            base_url=agent.base_url,
            http_credentials={
                "username": ADMIN_NAME,
                "password": ADMIN_TOKEN,
                "origin": agent.base_url,
            },
        )
        yield context.new_page()
        browser.close()


def statuses(agent: UvicornServer, count: int) -> list[int]:
    return [httpx.get(f"{agent.base_url}/limited").status_code for _ in range(count)]


def test_admin_page_turns_rate_limiting_off_and_back_on(
    agent: UvicornServer, page: Page, tmp_path: Path
) -> None:
    """A click on the page reaches the limiter on the next request, and the history names
    the token the operator signed in with."""
    page.goto("/_toolkit/")
    row = page.locator("tr[data-flag='ratelimit']")
    serving = row.locator(".serving strong")
    history = page.locator("#history tbody tr")
    expect(row).to_contain_text("Rate limiting")
    expect(serving).to_have_text("on")
    expect(page.locator("#stale")).to_be_hidden()
    expect(page.locator("#no-history")).to_be_visible()

    assert statuses(agent, 3) == [200, 200, 429]

    row.get_by_role("button", name="off", exact=True).click()
    expect(serving).to_have_text("off")
    expect(row.get_by_role("button", name="off", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(history).to_have_count(1)
    expect(history.first).to_contain_text("ratelimit")
    expect(history.first).to_contain_text(ADMIN_NAME)
    expect(page.locator("#error")).to_be_hidden()
    assert statuses(agent, 3) == [200, 200, 200]
    page.screenshot(path=tmp_path / "admin-page.png", full_page=True)

    row.get_by_role("button", name="on", exact=True).click()
    expect(serving).to_have_text("on")
    expect(history).to_have_count(2)
    # The budget spent before the switch refills one request per 30 s: still spent.
    assert 429 in statuses(agent, 3)
