"""Cost of @resilient and @cached on a stream of ``CHUNKS`` chunks; run with
``pytest --benchmark-only``.

Batches of ``BATCH`` streams on one uvloop loop (``test_micro.py``), each read to its end:
read the columns against ``test_bare_stream`` in the same run. A resilient stream pays its
guard once per stream and a loop turn per chunk; a cached hit replays stored chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from pytest_benchmark.fixture import BenchmarkFixture

import toolkit
from tests.benchmarks.test_micro import batch_of, loop  # noqa: F401 - the fixture
from toolkit.backends import MemoryBackend
from toolkit.cache import CacheStore, set_current_cache
from toolkit.resilience import BreakerRegistry, set_current_breakers

CHUNKS = 20


async def tokens(prompt: str) -> AsyncIterator[str]:
    for i in range(CHUNKS):
        yield f"{prompt}{i}"


def _read(stream: Callable[[str], AsyncIterator[str]]) -> Callable[[], Any]:
    async def read() -> None:
        async for _ in stream("t"):
            pass

    return read


def test_bare_stream(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    """The anchor: the async generator read directly."""
    benchmark(batch_of(loop, _read(tokens)))


def test_resilient_stream(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811
    meter_provider: MeterProvider,
) -> None:
    """A breaker, a retry policy and a timeout to the first chunk, every stream succeeding."""
    set_current_breakers(BreakerRegistry(meter_provider=meter_provider))
    stream = toolkit.resilient(
        breaker="bench", retries=3, retry_on=toolkit.resilience.provider_errors, timeout="20s"
    )(tokens)
    benchmark(batch_of(loop, _read(stream)))


def test_cached_stream_hit(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811
    meter_provider: MeterProvider,
) -> None:
    """Every stream a hit of the memory backend: the stored chunks replayed."""
    set_current_cache(CacheStore(MemoryBackend(), meter_provider=meter_provider))
    stream = toolkit.cached(ttl="1h", namespace="bench")(tokens)
    loop.run_until_complete(_read(stream)())  # stored
    benchmark(batch_of(loop, _read(stream)))
