"""@cached across real processes: one computation per key for the whole fleet, and no value
computed before an invalidation stored after it."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import httpx
import pytest

from tests.support.servers import RedisServer, UvicornServer
from tests.support.traffic import burst
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROCESSES = 4
CALLERS = 50
LEASE = 0.3
FUNCTION_SECONDS = 1.5  # five leases: without renewal, a second caller would take over
RUNS_KEY = "function-cache-test:runs"


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


def test_a_value_computed_before_another_process_invalidated_its_tag_is_not_served_after(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Process A computes an item's price from version 0 (slowly); meanwhile process B
    changes the item and invalidates its tag. A's caller gets version 0, but from then on
    every process serves version 1: the old value was not stored after the invalidation
    (before, it was, and was served for its whole time to live)."""
    env = {
        "TOOLKIT_BACKEND__URL": redis_url,
        "TOOLKIT_BACKEND__TIMEOUT": "2s",
        "FUNCTION_SECONDS": "1.0",
        "RUNS_KEY": RUNS_KEY,
    }

    async def scenario(a: str, b: str) -> tuple[object, object, list[object]]:
        async with httpx.AsyncClient(timeout=30) as client:
            first = asyncio.create_task(client.get(f"{a}/price", params={"item": "x"}))
            with redis_server.client() as sync:  # until A is computing
                await eventually(lambda: bool(sync.get(f"{RUNS_KEY}:price-runs")), 20)
            changed = (await client.post(f"{b}/price/x")).json()["version"]
            old = (await first).json()["result"]["version"]
            later = [
                (await client.get(f"{url}/price", params={"item": "x"})).json()["result"]["version"]
                for url in (a, b, a)
            ]
            return old, changed, later

    with (
        UvicornServer("tests.apps.function_cache:app", env=env) as a,
        UvicornServer("tests.apps.function_cache:app", env=env) as b,
    ):
        old, changed, later = asyncio.run(scenario(a.base_url, b.base_url))
    assert (old, changed) == (0, 1)
    assert later == [1, 1, 1]
