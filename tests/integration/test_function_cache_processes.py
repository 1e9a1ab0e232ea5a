"""@cached across real processes: one computation per key for the whole fleet."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import httpx
import pytest

from tests.support.servers import RedisServer, UvicornServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROCESSES = 4
CALLERS = 50
LEASE = 0.3
FUNCTION_SECONDS = 1.5  # five leases: without renewal, a second caller would take over
RUNS_KEY = "function-cache-test:runs"


async def burst(urls: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(urls), max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(*(client.get(url) for url in urls))


def test_cached_function_runs_once_for_4_processes_x_50_callers_when_slower_than_the_lease(
    redis_server: RedisServer, redis_url: str
) -> None:
    """200 concurrent callers in 4 uvicorn processes ask for one cold key of a function
    that takes five lease periods: it runs exactly once and every caller gets its result
    (aiocache's per-process stampede lock ran its function 151 times for 4 x 50 callers)."""
    env = {
        "TOOLKIT_BACKEND__URL": redis_url,
        "TOOLKIT_BACKEND__TIMEOUT": "2s",  # this test is about coordination, not latency
        "TOOLKIT_CACHE__LEASE": f"{LEASE}s",
        "FUNCTION_SECONDS": str(FUNCTION_SECONDS),
        "RUNS_KEY": RUNS_KEY,
    }
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(UvicornServer("tests.apps.function_cache:app", env=env))
            for _ in range(PROCESSES)
        ]
        urls = [f"{s.base_url}/classify?q=refund" for s in servers for _ in range(CALLERS)]
        responses = asyncio.run(burst(urls))
        with redis_server.client() as client:
            runs = int(client.get(RUNS_KEY) or 0)

    assert Counter(r.status_code for r in responses) == Counter({200: PROCESSES * CALLERS})
    assert runs == 1
    results = [r.json()["result"] for r in responses]
    assert all(result == results[0] for result in results)
    assert len({r.json()["served_by"] for r in responses}) == PROCESSES
