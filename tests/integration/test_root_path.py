"""A real ``uvicorn --root-path /api`` process: the toolkit matches paths relative to the root
path, as the app's router does, so exemptions, per-route policies, the response cache and
``/metrics`` behave as they do without one."""

from __future__ import annotations

import httpx
import pytest

from tests.support.servers import UvicornServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_under_uvicorn_root_path_exemptions_route_policies_and_the_cache_hold() -> None:
    """Behind a proxy that strips ``/api`` (uvicorn then sends ``/api/health`` with root path
    ``/api``): an exempt /health is never limited although the default limit is spent, a
    route's own policy applies, a cached route hits, and /metrics is served unlimited."""
    env = {
        "TOOLKIT_RATELIMIT__LIMIT": "3/minute",
        "TOOLKIT_RATELIMIT__ROUTES": '{"/limited": "1/minute"}',
    }
    with (
        UvicornServer("tests.apps.agent:app", env=env, args=["--root-path", "/api"]) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        answers = [http.get("/answers/42") for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 200]
        assert [a.headers.get("x-cache") for a in answers] == ["MISS", "HIT"]
        assert answers[1].json() == answers[0].json()  # the origin ran once

        assert [http.get("/limited").status_code for _ in range(2)] == [200, 429]
        assert "limited" in http.get("/limited").headers["ratelimit"]  # its own policy

        assert http.get("/open").status_code == 200  # the default budget: 3, now all spent
        assert http.get("/open").status_code == 429
        health = [http.get("/health") for _ in range(6)]
        assert [h.status_code for h in health] == [200] * 6
        assert not any("ratelimit" in h.headers for h in health)
        metrics = [http.get("/metrics") for _ in range(4)]
        assert [m.status_code for m in metrics] == [200] * 4
        assert 'http_route="/answers/{answer_id}"' in metrics[-1].text
