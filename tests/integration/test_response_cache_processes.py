"""The response cache across real uvicorn processes on one real Redis: one origin call per
key for the fleet, invalidation reaching every process's local copies, a Redis outage that
only ever costs cache hits, and no one caller's response holding or disabling the fleet's."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.support.servers import RedisServer, UvicornServer, require_binary, wait_until
from tests.support.traffic import burst
from tests.support.waiting import eventually
from toolkit.backends.redis import RedisBackend
from toolkit.cache import CacheStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROCESSES = 4
CALLERS = 50
LEASE = 0.3
ANSWER_SECONDS = 1.5  # five leases: without renewal a second caller would take over
# The Host is in the key; behind a load balancer every instance sees the public one.
HOST = {"host": "agent.example.com"}


@contextlib.contextmanager
def fleet(
    env: dict[str, str], processes: int = PROCESSES, app: str = "tests.apps.agent:app"
) -> Iterator[list[UvicornServer]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(UvicornServer(app, env=env)) for _ in range(processes)]


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
        responses = asyncio.run(burst(urls, headers=HOST))

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


MISBEHAVING = "tests.apps.response_cache:app"


def lease_taken(redis_url: str) -> bool:
    client = redis.Redis.from_url(redis_url)
    try:
        return any(True for _ in client.scan_iter(match="*lease:response:*"))
    finally:
        client.close()


def test_a_visitor_without_a_cookie_does_not_disable_caching_for_the_fleet(
    redis_url: str,
) -> None:
    """A public route behind a CSRF-cookie middleware, 3 processes: while a visitor without
    the cookie leads (its response sets one, so it is not stored), 30 callers with the cookie
    queue in every process; one of them runs the app next and the 29 others get its answer."""
    env = {
        "TOOLKIT_BACKEND__URL": redis_url,
        "TOOLKIT_BACKEND__TIMEOUT": "2s",
        "ANSWER_SECONDS": "1",
    }

    async def scenario(servers: list[UvicornServer]) -> tuple[httpx.Response, list[httpx.Response]]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, headers=HOST, limits=limits) as client:
            url = "/public/csrf"
            leader = asyncio.create_task(client.get(servers[0].base_url + url))
            await eventually(lambda: lease_taken(redis_url), 10)
            followers = [
                client.get(s.base_url + url, headers={"cookie": "csrftoken=t1"})
                for s in servers
                for _ in range(10)
            ]
            return await leader, await asyncio.gather(*followers)

    with fleet(env, processes=3, app=MISBEHAVING) as servers:
        leader, followers = asyncio.run(scenario(servers))
    assert "set-cookie" in leader.headers
    assert {r.status_code for r in followers} == {200}
    assert Counter(r.headers["x-cache"] for r in followers) == Counter({"MISS": 1, "HIT": 29})
    assert len({r.json()["run"] for r in followers}) == 1
    assert leader.json()["run"] != followers[0].json()["run"]


def test_a_leader_over_the_size_cap_does_not_hold_the_fleet(redis_url: str) -> None:
    """The leader's stream passes the size cap and then holds: callers in every process,
    cache.wait at its 60 s default, are all answered while it still holds."""
    env = {
        "TOOLKIT_BACKEND__URL": redis_url,
        "TOOLKIT_BACKEND__TIMEOUT": "2s",
        "TOOLKIT_CACHE__MAX_BODY_BYTES": "1000",
        "STREAM_BYTES": "4096",
    }

    async def scenario(servers: list[UvicornServer]) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, headers=HOST, limits=limits) as client:
            url = "/stream/big"
            hold = {"x-hold": "1"}
            async with client.stream("GET", servers[0].base_url + url, headers=hold) as leader:
                chunks = leader.aiter_bytes()
                await anext(chunks)  # the leader has passed the cap: 4 KiB against 1000 B
                async with asyncio.timeout(30):  # half of cache.wait
                    followers = await asyncio.gather(
                        *(client.get(s.base_url + url) for s in servers for _ in range(5))
                    )
                await client.post(servers[0].base_url + "/release")
                rest = b"".join([chunk async for chunk in chunks])
                assert rest.endswith(b"end")
            return followers

    with fleet(env, processes=3, app=MISBEHAVING) as servers:
        followers = asyncio.run(scenario(servers))
    assert {r.status_code for r in followers} == {200}
    assert {r.content for r in followers} == {b"x" * 4096 + b"end"}


def test_a_leader_whose_client_stops_reading_does_not_hold_the_fleet(redis_url: str) -> None:
    """The leader's client reads the response headers of an 8 MiB stream and then nothing,
    with a receive buffer of 4 KiB, so that the server cannot write it out: the response is
    stored all the same, and callers in every process are served it from the cache."""
    size = 8 * 1024 * 1024
    env = {
        "TOOLKIT_BACKEND__URL": redis_url,
        "TOOLKIT_BACKEND__TIMEOUT": "2s",
        "TOOLKIT_CACHE__MAX_BODY_BYTES": str(2 * size),
        "STREAM_BYTES": str(size),
    }

    async def followers(servers: list[UvicornServer]) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, headers=HOST) as client:
            async with asyncio.timeout(30):  # half of cache.wait
                return await asyncio.gather(
                    *(client.get(s.base_url + "/stream/stalled") for s in servers for _ in range(2))
                )

    with fleet(env, processes=3, app=MISBEHAVING) as servers, socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.settimeout(10)
        stalled.connect(("127.0.0.1", servers[0].port))
        stalled.sendall(b"GET /stream/stalled HTTP/1.1\r\nHost: agent.example.com\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += stalled.recv(1024)
        assert head.startswith(b"HTTP/1.1 200")
        answers = asyncio.run(followers(servers))
    assert {r.headers["x-cache"] for r in answers} == {"HIT"}
    assert {len(r.content) for r in answers} == {size + 3}
    assert len({r.headers["x-run"] for r in answers}) == 1
