"""In-process cost of the toolkit's hot paths; run with ``pytest --benchmark-only``.

Every benchmark times a batch of ``BATCH`` calls, so their columns compare directly: read the
middlewares against ``test_bare_app`` (same inner app, same loop) as ratios, not as absolute
numbers. Async batches run on one uvloop loop, created once, as under uvicorn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvloop
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from pytest_benchmark.fixture import BenchmarkFixture
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.benchmarks.apps import LIMIT, discarding_tracer_provider
from tests.support.asgi import http_scope
from toolkit import RateLimitMiddleware, TelemetryMiddleware
from toolkit.backends import GcraLimit, MemoryBackend
from toolkit.backends.redis import RedisBackend
from toolkit.flags import RATELIMIT, FlagStore, declare
from toolkit.identity import ClientAddress

BATCH = 1000
_BODY = b'{"message":"ok","items":[1,2,3]}'
_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"32")],
}
_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}
_GCRA_LIMITS = [GcraLimit.of(100_000_000, 60)]

Batch = Callable[[], None]


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send(_START)
    await send({"type": "http.response.body", "body": _BODY})


async def _receive() -> Message:
    return _REQUEST


async def _send(message: Message) -> None:
    del message


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = uvloop.new_event_loop()
    yield event_loop
    event_loop.close()


def batch_of(loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[Any]]) -> Batch:
    """``call`` awaited ``BATCH`` times in one pass of ``loop``."""

    async def batch() -> None:
        for _ in range(BATCH):
            await call()

    return lambda: loop.run_until_complete(batch())


def _requests(app: ASGIApp) -> Callable[[], Awaitable[None]]:
    scope = http_scope("/bench", headers=[("user-agent", "wrk")])

    def request() -> Awaitable[None]:
        return app(dict(scope), _receive, _send)

    return request


@pytest.fixture
def batch_tracer_provider() -> Iterator[TracerProvider]:
    """Spans batched, then discarded, as in the load test's traced configurations."""
    provider = discarding_tracer_provider()
    yield provider
    provider.shutdown()


def test_bare_app(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """The anchor: the inner app alone."""
    benchmark(batch_of(loop, _requests(inner_app)))


def test_ratelimit_middleware_memory(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, meter_provider: MeterProvider
) -> None:
    """Policy lookup, client key, hash, GCRA in memory, count, and the two added fields."""
    app = RateLimitMiddleware(
        inner_app,
        limit=LIMIT,
        backend=MemoryBackend(meter_provider=meter_provider),
        meter_provider=meter_provider,
    )
    benchmark(batch_of(loop, _requests(app)))


def test_telemetry_middleware(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    batch_tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    """A recorded SERVER span (batched, then discarded) and the HTTP metrics."""
    app = TelemetryMiddleware(
        inner_app, tracer_provider=batch_tracer_provider, meter_provider=meter_provider
    )
    benchmark(batch_of(loop, _requests(app)))


def test_memory_gcra_decision(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    backend = MemoryBackend()
    benchmark(batch_of(loop, lambda: backend.gcra(["rl:{key}:limit"], _GCRA_LIMITS, 1)))


def test_redis_gcra_decision(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, redis_url: str
) -> None:
    """One script call to a real redis-server on loopback: the redis configurations' floor."""
    backend = RedisBackend(redis_url, timeout=2)
    try:
        benchmark(batch_of(loop, lambda: backend.gcra(["rl:{key}:limit"], _GCRA_LIMITS, 1)))
    finally:
        loop.run_until_complete(backend.close())


def _sync_batch(function: Callable[[Scope], object], scope: Scope) -> Batch:
    def batch() -> None:
        for _ in range(BATCH):
            function(scope)

    return batch


def test_client_address(benchmark: BenchmarkFixture) -> None:
    """No trusted proxy: the peer address."""
    benchmark(_sync_batch(ClientAddress(), http_scope("/bench")))


def test_client_address_behind_trusted_proxy(benchmark: BenchmarkFixture) -> None:
    """The peer is a trusted proxy: the X-Forwarded-For chain is walked from the right."""
    scope = http_scope(
        "/bench",
        headers=[("x-forwarded-for", "203.0.113.7, 10.0.0.2")],
        client=("10.0.0.1", 50000),
    )
    address = ClientAddress(["10.0.0.0/8"])
    assert address(scope) == "203.0.113.7"
    benchmark(_sync_batch(address, scope))


def _repeat(call: Callable[[], object]) -> Batch:
    def batch() -> None:
        for _ in range(BATCH):
            call()

    return batch


def test_flag_evaluation_kill_switch(benchmark: BenchmarkFixture) -> None:
    """What every request pays per capability: a kill switch at its default."""
    store = FlagStore()
    benchmark(_repeat(lambda: store.evaluate(RATELIMIT)))


def test_flag_evaluation_rollout(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop
) -> None:
    """A percentage rollout: the caller hashed into its bucket."""
    store = FlagStore()
    declare("bench.rollout")
    loop.run_until_complete(store.rollout("bench.rollout", "on", 50, by="bench"))
    benchmark(_repeat(lambda: store.evaluate("bench.rollout", caller="api_key:user-1")))


def test_openfeature_sdk_evaluation(benchmark: BenchmarkFixture) -> None:
    """The anchor for flags: the OpenFeature SDK's in-memory provider, same question."""
    api.set_provider(
        InMemoryProvider({"bench.rollout": InMemoryFlag("off", {"on": True, "off": False})})
    )
    client = api.get_client()
    context = EvaluationContext(targeting_key="api_key:user-1")
    try:
        benchmark(_repeat(lambda: client.get_boolean_value("bench.rollout", False, context)))
    finally:
        api.clear_providers()
