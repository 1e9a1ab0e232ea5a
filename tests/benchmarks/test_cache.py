"""In-process cost of the caches' hit paths; run with ``pytest --benchmark-only``.

Batches of ``BATCH`` calls on one uvloop loop, as in ``test_micro.py``: read the response
cache against ``test_micro.py::test_bare_app`` (the same inner app answering itself). A
response-cache hit never reaches the app, so on memory it can beat the bare app; on Redis it
is one round trip to a real redis-server on loopback.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from pytest_benchmark.fixture import BenchmarkFixture

import toolkit
from tests.benchmarks.test_micro import BATCH, batch_of, inner_app, loop  # noqa: F401 - fixture
from tests.support.asgi import http_scope
from toolkit import ResponseCacheMiddleware
from toolkit.backends import Backend, MemoryBackend
from toolkit.backends.redis import RedisBackend
from toolkit.cache import CacheStore, set_current_cache

EMBEDDING_BATCH = 100


@pytest.fixture(params=["memory", "redis"])
def store(
    request: pytest.FixtureRequest,
    loop: asyncio.AbstractEventLoop,  # noqa: F811 - the fixture
    meter_provider: MeterProvider,
) -> Iterator[CacheStore]:
    backend: Backend
    if request.param == "memory":
        backend = MemoryBackend(meter_provider=meter_provider)
    else:
        redis_url = request.getfixturevalue("redis_url")
        backend = RedisBackend(redis_url, timeout=2, meter_provider=meter_provider)
    cache = CacheStore(backend, meter_provider=meter_provider)
    set_current_cache(cache)
    yield cache
    loop.run_until_complete(backend.close())


async def _ignore(message: object) -> None:
    del message


async def _receive() -> dict[str, object]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _hits(app: ResponseCacheMiddleware) -> Callable[[], Awaitable[None]]:
    scope = http_scope("/bench", headers=[("user-agent", "wrk"), ("host", "agent.example")])

    def request() -> Awaitable[None]:
        return app(dict(scope), _receive, _ignore)

    return request


def test_response_cache_hit(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811 - the fixture
    store: CacheStore,
) -> None:
    """Key (route, path, query, Host, identity), one lookup, decode, count, replay."""
    app = ResponseCacheMiddleware(inner_app, routes={"/bench": {"ttl": 3600}}, cache=store)
    request = _hits(app)
    loop.run_until_complete(request())  # the miss that stores it
    benchmark(batch_of(loop, request))


def test_function_cache_hit(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811 - the fixture
    store: CacheStore,
) -> None:
    """Key from the arguments, one lookup, JSON load, count."""

    @toolkit.cached(ttl=3600, namespace="bench")
    async def classify(query: str, locale: str = "en") -> dict[str, str]:
        return {"intent": "refund", "query": query, "locale": locale}

    loop.run_until_complete(classify("where is my refund"))
    benchmark(batch_of(loop, lambda: classify("where is my refund")))


@pytest.mark.parametrize("dimensions", [384, 1536])
def test_embedding_cache_all_hits(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811 - the fixture
    store: CacheStore,
    dimensions: int,
) -> None:
    """A batch of 100 texts, every one cached: per item, divide by BATCH x 100."""
    rng = random.Random(7)
    vectors = {f"text {i}": [rng.random() for _ in range(dimensions)] for i in range(100)}

    @toolkit.cache_embeddings(model=f"bench-{dimensions}")
    async def embed(texts: list[str]) -> list[list[float]]:
        return [vectors[text] for text in texts]

    texts = list(vectors)
    loop.run_until_complete(embed(texts))
    benchmark.pedantic(
        batch_of(loop, lambda: embed(texts)), rounds=5, iterations=1, warmup_rounds=1
    )
