"""Four uvicorn worker processes share one Redis: the limit holds exactly across them."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from tests.support.servers import RedisServer, UvicornServer
from tests.support.traffic import burst

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ALGORITHMS = ["gcra", "fixed-window", "moving-window", "sliding-window-counter"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_four_workers_admit_exactly_the_limit(
    redis_server: RedisServer, redis_url: str, algorithm: str
) -> None:
    """1,000 concurrent requests against 100 per hour: exactly 100 pass, whichever worker
    serves them (an hour-long window cannot roll during the test)."""
    env = {
        "TOOLKIT_BACKEND__URL": redis_url,
        "TOOLKIT_BACKEND__TIMEOUT": "5s",  # this test is about atomicity, not latency
        "TOOLKIT_RATELIMIT__ALGORITHM": algorithm,
        "TOOLKIT_RATELIMIT__ROUTES": json.dumps({"/limited": "100/hour"}),
    }
    with UvicornServer("tests.apps.agent:app", env=env, workers=4) as server:
        responses = asyncio.run(burst([server.base_url + "/limited"] * 1000))
    assert Counter(r.status_code for r in responses) == Counter({200: 100, 429: 900})
    workers = {r.json()["worker"] for r in responses if r.status_code == 200}
    assert len(workers) > 1  # the admitted requests really were spread over processes
