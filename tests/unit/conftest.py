"""Fixtures for unit tests: a Redis to stop and restart under a cache, and the ways of serving."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics import MeterProvider

from tests.support.asgi import SERVINGS, Serving, served_as
from tests.support.servers import RedisServer
from toolkit.backends._reconnect import Reconnect
from toolkit.backends.redis import RedisBackend
from toolkit.cache import CacheStore, set_current_cache


@dataclass
class StoppableCache:
    """A Redis of the test's own (``server.stop()`` / ``server.start()``) behind the current
    cache store, probed again every 100 ms once it fails."""

    server: RedisServer
    backend: RedisBackend


@pytest.fixture
async def stoppable_cache(
    redis_server: RedisServer, meter_provider: MeterProvider
) -> AsyncIterator[StoppableCache]:
    server = RedisServer(redis_server.binary)
    server.start()
    backend = RedisBackend(
        server.url,
        timeout=0.2,
        meter_provider=meter_provider,
        reconnect=Reconnect(initial_delay=0.1, max_delay=0.1),
    )
    set_current_cache(CacheStore(backend, meter_provider=meter_provider))
    try:
        yield StoppableCache(server, backend)
    finally:
        await backend.close()
        server.stop()


@pytest.fixture(params=SERVINGS, ids=lambda way: way.name)
def served(request: pytest.FixtureRequest) -> Iterator[Serving]:
    """The test three ways: the app served plainly, under ``root_path="/api"``, and mounted at
    ``/v1`` of a parent app. The helpers of tests.support.asgi follow it; a middleware test
    module runs every test each way with ``pytest.mark.usefixtures("served")``."""
    with served_as(request.param) as way:
        yield way
