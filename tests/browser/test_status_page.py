"""The status page in a real browser: real traffic through a real uvicorn process, then every
section of the page filled, and a screenshot of it under the test's tmp dir.

Headless Chromium from the system packages (``/usr/bin/chromium``), driven by Playwright, signed
in with a read-only token, against ``tests.apps.status`` (an agent traced with GenAI spans, a
cached route, a breaker, a pool, the real loop monitor and a route that blocks it with a
synchronous sqlite write).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.apps.status import AGENT, BLOCKING_CALL, MODEL
from tests.browser.test_admin_page import CHROMIUM_ARGS
from tests.support.servers import UvicornServer, require_binary
from toolkit.telemetry._loop_report import OFFLOAD_HINT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

VIEWER = "oncall"
VIEWER_TOKEN = secrets.token_urlsafe(24)
SECTIONS = ("routes", "agents", "models", "caches", "breakers", "pools")


def status_server(*args: str) -> UvicornServer:
    env = {
        "TOOLKIT_ADMIN__TOKENS": json.dumps({"ops": secrets.token_urlsafe(24)}),
        "TOOLKIT_ADMIN__READ_TOKENS": json.dumps({VIEWER: VIEWER_TOKEN}),
    }
    return UvicornServer("tests.apps.status:status_app", env=env, args=["--factory", *args])


def blocking_place() -> str:
    """How the page and ``top`` name ``/block``'s synchronous write: ``file:line in block``."""
    file, line, function = BLOCKING_CALL
    return f"{file}:{line} in {function}"


def drive(base_url: str) -> None:
    """Traffic for every section: agent runs (a tool, a model call, a pooled sandbox), cache
    hits and a miss, a slow request, failures, and a blocked loop."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        for i in range(5):
            assert http.get(f"/chat/session-{i}").status_code == 200
            assert http.get("/answers/1").status_code == 200
            assert http.get("/fail").status_code == 503
        assert http.get("/slow", params={"seconds": 0.5}).status_code == 200
        assert http.get("/block").status_code == 200


@pytest.fixture(params=["plain", "root_path"])
def agent(request: pytest.FixtureRequest) -> Iterator[tuple[UvicornServer, str]]:
    """The app served plainly, and under ``--root-path /api`` behind a proxy that strips it
    (the browser asks for /status; the proxy is played by the app seeing the prefix)."""
    args = ("--root-path", "/api") if request.param == "root_path" else ()
    with status_server(*args) as server:
        yield server, request.param


@pytest.fixture
def page(agent: tuple[UvicornServer, str]) -> Iterator[Page]:
    server = agent[0]
    chromium = require_binary("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(
            base_url=server.base_url,
            http_credentials={
                "username": VIEWER,
                "password": VIEWER_TOKEN,
                "origin": server.base_url,
            },
        )
        tab = context.new_page()
        errors: list[str] = []
        tab.on(
            "console",
            lambda message: errors.append(message.text) if message.type == "error" else None,
        )
        yield tab
        assert errors == [], errors  # a CSP refusal or a script error shows here
        browser.close()


def test_status_page_shows_every_section_filled_from_real_traffic(
    agent: tuple[UvicornServer, str], page: Page, tmp_path: Path
) -> None:
    server, way = agent
    page.goto("/_toolkit/status")
    # Before any agent ran: agent figures come from spans, and the page says none was seen.
    for section in ("agents", "models"):
        hint = page.locator(f"#{section} .hint")
        expect(hint).to_be_visible()
        expect(hint).to_contain_text("No GenAI span")
        expect(hint).to_contain_text("sampler")
    drive(server.base_url)
    page.reload()
    for section in SECTIONS:
        rows = page.locator(f"#{section} tbody tr")
        expect(rows.first).to_be_visible()
        expect(page.locator(f"#{section} .empty")).to_be_hidden()
    expect(page.locator("#routes tr[data-route='GET /chat/{session}']")).to_contain_text("5")
    expect(page.locator("#routes tr[data-route='GET /fail']")).to_contain_text("100.0 %")
    expect(page.locator(f"#agents tr[data-name='{AGENT}']")).to_be_visible()
    expect(page.locator(f"#models tr[data-name='{MODEL}']")).to_contain_text("150")  # 5 calls of 30
    expect(page.locator("#caches tr[data-cache='response']")).to_contain_text("80.0 %")
    expect(page.locator("#breakers tr[data-breaker='llm']")).to_contain_text("closed")
    expect(page.locator("#pools tr[data-pool='sandbox']")).to_be_visible()
    expect(page.locator("#loop table")).to_be_visible()
    # The newest block is open, led by the line of the synchronous sqlite write.
    blocked = page.locator("#loop details.blocked").first
    expect(blocked.locator("summary code.where")).to_have_text(blocking_place())
    expect(blocked.locator("pre.source")).to_contain_text("notes.execute")
    expect(blocked.locator("pre.stack")).to_be_visible()
    expect(blocked).to_contain_text("cause waiting")
    expect(blocked.locator("p.fix")).to_have_text(f"Fix: {OFFLOAD_HINT}.")
    expect(page.locator("#agents .hint")).to_be_hidden()  # GenAI spans were seen
    slowest = page.locator("#slowest details.trace").first
    expect(slowest).to_contain_text("GET /slow")
    expect(slowest.locator(".span-bar").first).to_be_visible()
    chat = page.locator("#slowest details.trace", has_text="GET /chat/{session}").first
    chat.locator("summary").click()
    for span in (f"invoke_agent {AGENT}", "execute_tool search", f"chat {MODEL}"):
        expect(chat.locator(".span-name", has_text=span)).to_be_visible()
    expect(page.locator("#failed details.trace").first).to_contain_text("GET /fail")
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#routes tbody")).not_to_contain_text("/_toolkit")
    screenshot = tmp_path / f"status-page-{way}.png"
    page.screenshot(path=screenshot, full_page=True)
    print(f"status page screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
