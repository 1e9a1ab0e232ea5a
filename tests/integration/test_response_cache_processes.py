"""The response cache across real uvicorn processes on one real Redis: one origin call per
key for the fleet, invalidation reaching every process's local copies, and a Redis outage
that only ever costs cache hits."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import RedisServer, UvicornServer, require_binary, wait_until
from toolkit.backends.redis import RedisBackend
from toolkit.cache import CacheStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROCESSES = 4
CALLERS = 50
LEASE = 0.3
ANSWER_SECONDS = 1.5  # five leases: without renewal a second caller would take over
# The Host is in the key; behind a load balancer every instance sees the public one.
HOST = {"host": "agent.example.com"}


async def burst(urls: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(urls), max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60, headers=HOST) as client:
        return await asyncio.gather(*(client.get(url) for url in urls))


@contextlib.contextmanager
def fleet(env: dict[str, str], processes: int = PROCESSES) -> Iterator[list[UvicornServer]]:
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(UvicornServer("tests.apps.agent:app", env=env))
            for _ in range(processes)
        ]


def test_origin_runs_once_for_4_processes_x_50_callers_when_slower_than_the_lease(
    redis_url: str,
) -> None:
    """200 concurrent callers in 4 processes ask for one cold route whose origin takes five
    lease periods: one caller runs it (MISS), the 199 others get its response (HIT)."""
    env = {
        "TOOLKIT_BACKEND__URL": redis_url,
        "TOOLKIT_BACKEND__TIMEOUT": "2s",  # this test is about coordination, not latency
        "TOOLKIT_CACHE__LEASE": f"{LEASE}s",
        "ANSWER_SECONDS": str(ANSWER_SECONDS),
    }
    with fleet(env) as servers:
        urls = [f"{s.base_url}/answers/cold" for s in servers for _ in range(CALLERS)]
        responses = asyncio.run(burst(urls))

    assert Counter(r.status_code for r in responses) == Counter({200: PROCESSES * CALLERS})
    assert Counter(r.headers["x-cache"] for r in responses) == Counter(
        {"MISS": 1, "HIT": PROCESSES * CALLERS - 1}
    )
    assert len({r.json()["run"] for r in responses}) == 1  # one origin run, byte-equal answers
    assert len({r.content for r in responses}) == 1


async def invalidate(redis_url: str, tags: list[str]) -> int:
    backend = RedisBackend(redis_url, timeout=2)
    try:
        return await CacheStore(backend).invalidate(tags)
    finally:
        await backend.close()


def test_tag_invalidation_reaches_the_local_copies_of_every_process(redis_url: str) -> None:
    """Each process keeps the answer in its local tier for a minute; an invalidation made
    elsewhere (here, by this test) empties every one of them within a second, and the next
    answer is computed once for the fleet."""
    env = {
        "TOOLKIT_BACKEND__URL": redis_url,
        "TOOLKIT_CACHE__LOCAL_ENTRIES": "100",
        "TOOLKIT_CACHE__LOCAL_TTL": "60s",  # only an invalidation can empty them in time
    }
    with fleet(env) as servers, httpx.Client(timeout=5, headers=HOST) as client:
        urls = [f"{s.base_url}/answers/tagged" for s in servers]
        first = [client.get(url) for url in urls]
        old = {r.json()["run"] for r in first}
        assert len(old) == 1
        assert [r.headers["x-cache"] for r in first] == ["MISS", "HIT", "HIT", "HIT"]

        assert asyncio.run(invalidate(redis_url, ["answers"])) >= 1

        def every_process_has_a_new_answer() -> bool:
            new.clear()
            new.update(client.get(url).json()["run"] for url in urls)
            return not new & old

        new: set[str] = set()
        wait_until(every_process_has_a_new_answer, 1, "every process dropping its copy")
        assert len(new) == 1  # one process computed it, the others read it


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, since the test stops it."""
    server = RedisServer(require_binary("redis-server"))
    server.start()
    yield server
    server.stop()


def test_redis_stopped_costs_only_hits_and_caching_resumes(own_redis: RedisServer) -> None:
    """With Redis down every request is answered by the origin (BYPASS), never a 500; once
    it is back, answers are stored and served from the cache again, by themselves."""
    env = {"TOOLKIT_BACKEND__URL": own_redis.url}
    with fleet(env, processes=1) as (server,), httpx.Client(timeout=5) as client:
        url = f"{server.base_url}/answers/outage"
        assert client.get(url).headers["x-cache"] == "MISS"
        assert client.get(url).headers["x-cache"] == "HIT"

        own_redis.stop()
        during = [client.get(url) for _ in range(20)]
        assert {r.status_code for r in during} == {200}
        assert {r.headers["x-cache"] for r in during} == {"BYPASS"}
        assert len({r.json()["run"] for r in during}) == 20  # each from the origin

        own_redis.start()

        wait_until(lambda: client.get(url).headers["x-cache"] == "HIT", 5, "answers cached again")
