"""Redis stops or stalls under load: requests keep flowing, and limiting comes back by itself."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

import toolkit
from tests.support.servers import RedisServer, UvicornServer, require_binary
from tests.support.waiting import eventually
from toolkit.flags import RATELIMIT, FlagStore
from toolkit.settings import ToolkitSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TIMEOUT = 0.1  # the backend timeout the server runs with (the default)


@dataclass
class Sample:
    at: float
    path: str
    status: int
    latency: float
    lag: float | None


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, since the test stops it."""
    server = RedisServer(require_binary("redis-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(redis: RedisServer) -> Iterator[UvicornServer]:
    env = {
        "TOOLKIT_BACKEND__URL": redis.url,
        "TOOLKIT_BACKEND__TIMEOUT": str(TIMEOUT),
        "TOOLKIT_RATELIMIT__ROUTES": json.dumps(
            {
                "/open": "100000/minute",
                "/closed": {"limit": "100000/minute", "failure": "closed"},
                "/limited": "3/minute",
            }
        ),
    }
    with UvicornServer("tests.apps.agent:app", env=env) as running:
        yield running


async def load(base_url: str, seconds: float, samples: list[Sample]) -> None:
    """Ten clients, each cycling through a fail-open route, a fail-closed route and the
    event-loop probe, as fast as the server answers."""
    deadline = time.monotonic() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            for path in ("/open", "/closed", "/loop"):
                started = time.monotonic()
                response = await client.get(base_url + path)
                lag = response.json()["lag"] if path == "/loop" else None
                samples.append(
                    Sample(started, path, response.status_code, time.monotonic() - started, lag)
                )

    async with httpx.AsyncClient(timeout=10) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(10)))


@dataclass
class Outage:
    stopping: float  # redis-server told to stop
    stopped: float  # its process has exited
    restarting: float  # started again
    back: float  # answering again


def during(samples: list[Sample], start: float, end: float, path: str) -> list[Sample]:
    return [s for s in samples if start <= s.at < end and s.path == path]


def assert_answered_within_the_timeout(samples: list[Sample], fault_seconds: float) -> None:
    """Requests are answered within the backend timeout, never after waiting out the fault.

    The latencies are the client's, on a machine the client, the server and Redis share: a
    scheduler hiccup can delay one answer. So the typical request must fit the timeout, and
    every request must come back well before the fault ends (one that waited on Redis would
    take as long as the fault)."""
    latencies = sorted(s.latency for s in samples)
    assert latencies[len(latencies) // 2] < TIMEOUT + 0.1, latencies
    assert latencies[int(len(latencies) * 0.95)] < TIMEOUT + 0.4, latencies
    assert latencies[-1] < fault_seconds * 2 / 3, latencies


def test_redis_outage_fails_open_or_closed_as_configured_and_recovers(
    redis: RedisServer, server: UvicornServer
) -> None:
    samples: list[Sample] = []

    async def scenario() -> Outage:
        driver = asyncio.create_task(load(server.base_url, 4.0, samples))
        await asyncio.sleep(1.0)
        stopping = time.monotonic()
        await asyncio.to_thread(redis.stop)
        stopped = time.monotonic()
        await asyncio.sleep(2.0)
        restarting = time.monotonic()
        await asyncio.to_thread(redis.start)
        back = time.monotonic()
        await driver
        return Outage(stopping, stopped, restarting, back)

    outage = asyncio.run(scenario())
    stopped, back = outage.stopped, outage.back

    assert not [s for s in samples if s.status >= 500 and s.path != "/closed"]
    before = during(samples, 0, outage.stopping, "/open")
    assert before
    assert {s.status for s in before} == {200}
    # Redis down: the fail-open route keeps answering 200 within the backend timeout, the
    # fail-closed route answers 503, and nothing blocks the event loop. Only requests sent
    # while the process was surely gone count: from its exit until a margin before the
    # restart (a request sent just before it may reach the new process).
    outage_open = during(samples, stopped, outage.restarting - 0.2, "/open")
    outage_closed = during(samples, stopped, outage.restarting - 0.2, "/closed")
    assert outage_open
    assert outage_closed
    assert {s.status for s in outage_open} == {200}
    assert {s.status for s in outage_closed} == {503}
    assert_answered_within_the_timeout(outage_open, back - stopped)
    lags = [s.lag for s in during(samples, stopped, back, "/loop") if s.lag is not None]
    assert lags
    assert max(lags) < 0.25

    # Redis back: limiting resumes within 2 s.
    resumed = None
    with httpx.Client(timeout=5) as client:
        while time.monotonic() - back < 5:
            statuses = [client.get(server.base_url + "/limited").status_code for _ in range(5)]
            if 429 in statuses:
                resumed = time.monotonic() - back
                break
            time.sleep(0.05)
    assert resumed is not None
    assert resumed < 2.0


def test_a_stalled_redis_costs_at_most_the_timeout(
    redis: RedisServer, server: UvicornServer
) -> None:
    samples: list[Sample] = []

    async def scenario() -> float:
        driver = asyncio.create_task(load(server.base_url, 2.5, samples))
        await asyncio.sleep(0.5)
        paused = time.monotonic()
        await asyncio.to_thread(redis.pause, 1.5)
        await driver
        return paused

    paused = asyncio.run(scenario())
    stalled = during(samples, paused, paused + 1.5, "/open")
    assert stalled
    assert {s.status for s in stalled} == {200}
    assert_answered_within_the_timeout(stalled, 1.5)
    assert not [s for s in samples if s.status >= 500 and s.path != "/closed"]


class Agent:
    """Stands for an agent whose construction holds the event loop (a model loaded, a big
    import, a sync client built)."""

    async def aclose(self) -> None: ...


async def build_agent() -> Agent:
    time.sleep(0.3)  # noqa: ASYNC251 - the point: the warm-up holds the loop
    return Agent()


@pytest.mark.anyio
async def test_a_busy_warm_up_does_not_make_the_flags_stale(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis is up while the pools warm up holding the event loop (three builds of 300 ms,
    three times the backend timeout): startup follows flag changes without once declaring
    the flags unreadable or the backend down."""
    app = FastAPI()
    pool = toolkit.AgentPool(build_agent, name="heavy", size=3, warm=3)
    installed = toolkit.install(
        app, ToolkitSettings(backend={"url": redis_url}), pools=[pool]
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        async with app.router.lifespan_context(app):
            # Subscribed before the warm-up (start() returns once live), through it: a change
            # made now reaches the app by its subscription.
            await FlagStore(installed.backend).set(RATELIMIT, "shadow", by="test")
            await eventually(lambda: installed.store.variant(RATELIMIT) == "shadow", 5)
            assert not installed.store.stale
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "cannot be read" in w or "skipping it" in w], warnings
