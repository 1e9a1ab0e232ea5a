"""Issue 11's pipeline case across two real processes on real Redis: a profile's new memory
invalidates that profile's retrieval cache (``@cached(tags=lambda profile_id, **_: ...)``) on
every instance, in-process copies included, and a retrieval in flight when the memory was
added never stores its stale result after the invalidation; streamed retrievals alike."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.servers import RedisServer, UvicornServer
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

KEY = "profile-memory-test"


def test_a_new_memory_invalidates_its_profiles_retrieval_cache_on_every_instance_without_a_race(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Instances A and B (each with an in-process tier in front of Redis) serve a profile's
    cached retrieval. A slow retrieval for a new query starts on A; meanwhile B adds a
    memory to the profile. A's caller gets what it read before, but from then on both
    instances answer every query of that profile with the new memory (the in-flight result
    was not stored, the entries and the copies of both instances were dropped), while the
    other profile's entries stay cached."""
    env = {
        "TOOLKIT_BACKEND__URL": redis_url,
        "TOOLKIT_BACKEND__TIMEOUT": "2s",
        "TOOLKIT_CACHE__LOCAL_ENTRIES": "1000",  # copies in each process, dropped by pub/sub
        "TOOLKIT_CACHE__LOCAL_TTL": "10m",  # so that only the invalidation can drop them
        "DATA_KEY": KEY,
    }

    def runs() -> int:
        with redis_server.client() as client:
            return int(client.get(f"{KEY}:runs") or 0)

    async def memories(client: httpx.AsyncClient, url: str, query: str) -> list[str]:
        answer = await client.get(f"{url}/profiles/p1/search", params={"q": query})
        assert answer.status_code == 200
        found: list[str] = answer.json()["result"]["memories"]
        return found

    async def recalled(client: httpx.AsyncClient, url: str) -> list[str]:
        answer = await client.get(f"{url}/profiles/p1/recall", params={"q": "all"})
        return [line.removeprefix("data: ") for line in answer.text.split("\n\n") if line]

    async def scenario(a: str, b: str) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await client.post(f"{a}/profiles/p1/memories", params={"text": "likes tea"})
            await client.post(f"{a}/profiles/p2/memories", params={"text": "likes jazz"})
            for url in (a, b, a, b):  # computed once, then served by both from the cache
                assert await memories(client, url, "drinks") == ["likes tea"]
                assert await recalled(client, url) == ["likes tea"]
            await client.get(f"{b}/profiles/p2/search", params={"q": "music"})
            assert runs() == 3

            with redis_server.client() as sync:
                sync.set(f"{KEY}:delay", "1.0")
            in_flight = asyncio.create_task(memories(client, a, "home"))
            await eventually(lambda: runs() == 4, 20)  # A has read the memories, is "searching"
            with redis_server.client() as sync:
                sync.set(f"{KEY}:delay", "0")
            await client.post(f"{b}/profiles/p1/memories", params={"text": "moved to Lyon"})
            assert await in_flight == ["likes tea"]  # what it read, for its own caller only

            both = ["likes tea", "moved to Lyon"]
            for url in (a, b, a, b):
                assert await memories(client, url, "home") == both  # not the in-flight one
                assert await memories(client, url, "drinks") == both  # old entries dropped
                assert await recalled(client, url) == both  # the cached stream too
            before = runs()
            await client.get(f"{a}/profiles/p2/search", params={"q": "music"})
            assert runs() == before  # the other profile's entry survived

    with (
        UvicornServer("tests.apps.profile_memory:app", env=env) as a,
        UvicornServer("tests.apps.profile_memory:app", env=env) as b,
    ):
        asyncio.run(scenario(a.base_url, b.base_url))
