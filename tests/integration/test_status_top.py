"""``agent-toolkit top`` against a real server: it reads ``/stats`` with a read-only token and
redraws its table, and says why when it cannot read."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.apps.status import AGENT, MODEL
from tests.browser.test_status_page import VIEWER_TOKEN, blocking_place, drive, status_server
from tests.support.servers import UvicornServer
from toolkit.telemetry._loop_report import OFFLOAD_HINT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def agent() -> Iterator[UvicornServer]:
    with status_server() as server:
        drive(server.base_url)
        yield server


def top(*args: str, token: str = VIEWER_TOKEN) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", "top", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AGENT_TOP_TOKEN": token},
    )


def test_top_redraws_the_servers_table_a_bounded_number_of_times(agent: UvicornServer) -> None:
    result = top(agent.base_url, "--count", "3", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    frames = result.stdout.split("agent-toolkit top  ")[1:]
    assert len(frames) == 3
    last = frames[-1]
    (chat,) = [line for line in last.splitlines() if line.startswith("GET /chat/{session}")]
    assert chat.split()[2] == "5"  # "GET", the route, then the requests
    (fail,) = [line for line in last.splitlines() if line.startswith("GET /fail")]
    assert "100.0%" in fail
    assert any(line.startswith(AGENT) for line in last.splitlines())
    assert any(line.startswith(MODEL) for line in last.splitlines())
    assert "response" in last
    assert "LOOP: lag p50" in last
    (blocked,) = [line for line in last.splitlines() if line.startswith(blocking_place())]
    assert "waiting" in blocked.split()
    fix = last[last.index("fix: ") :].split("\n\n")[0]  # wrapped, to the end of the frame
    assert " ".join(fix.split()) == f"fix: {OFFLOAD_HINT}"
    # Its own /stats reads (three of them) are not the app's traffic.
    assert "/_toolkit" not in last


def test_top_exits_1_naming_the_refusal_or_the_missing_server(agent: UvicornServer) -> None:
    wrong = top(agent.base_url, "--count", "1", token="not-the-token-at-all-0123")
    assert wrong.returncode == 1
    assert "403" in wrong.stderr
    assert "do not match any admin token" in wrong.stderr
    nobody = top("http://127.0.0.1:9", "--count", "1")
    assert nobody.returncode == 1
    assert "http://127.0.0.1:9/_toolkit/stats" in nobody.stderr
    assert httpx.get(agent.base_url + "/health").status_code == 200
