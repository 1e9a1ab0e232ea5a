"""Cost of the resilient wrapper per successful call; run with ``pytest --benchmark-only``.

Batches of ``BATCH`` calls on one uvloop loop (``test_micro.py``), each a call to a function
that succeeds at once, so the columns are the wrappers' own cost: read them against
``test_bare_call`` and against tenacity and purgatory (a circuit-breaker library) doing the
same job in the same run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from purgatory import AsyncCircuitBreakerFactory
from pytest_benchmark.fixture import BenchmarkFixture
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

import toolkit
from tests.benchmarks.test_micro import batch_of, loop  # noqa: F401 - the fixture
from toolkit.backends import Backend, MemoryBackend
from toolkit.backends.redis import RedisBackend
from toolkit.resilience import provider_errors


async def answer(prompt: str) -> str:
    return prompt


@pytest.fixture(params=["memory", "redis"])
def breaker_backend(
    request: pytest.FixtureRequest,
    loop: asyncio.AbstractEventLoop,  # noqa: F811 - the fixture
) -> Iterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    backend = RedisBackend(request.getfixturevalue("redis_url"), timeout=2)
    yield backend
    loop.run_until_complete(backend.close())


def _calls(function: Callable[[str], Awaitable[str]]) -> Callable[[], Awaitable[str]]:
    return lambda: function("hello")


def test_bare_call(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    """The anchor: the function awaited directly."""
    benchmark(batch_of(loop, _calls(answer)))


@pytest.mark.parametrize("timeout", [None, "20s"], ids=["no-deadline", "deadline"])
def test_resilient_call(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811
    breaker_backend: Backend,
    meter_provider: MeterProvider,
    timeout: str | None,
) -> None:
    """Flag check, breaker admission (closed: no backend round trip), a first attempt
    outside any retry loop, the outcome counted; with a deadline, an asyncio.timeout."""
    breaker = toolkit.CircuitBreaker(
        "bench", backend=breaker_backend, meter_provider=meter_provider
    )
    wrapped = toolkit.resilient(
        breaker=breaker, retries=3, retry_on=provider_errors, timeout=timeout
    )(answer)
    loop.run_until_complete(wrapped("warm"))
    benchmark(batch_of(loop, _calls(wrapped)))


def test_tenacity_retrying(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    """tenacity's AsyncRetrying around the same call: retries only, no breaker."""

    async def retried(prompt: str) -> str:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(3),
            wait=wait_random_exponential(multiplier=0.1, max=5),
            retry=retry_if_exception(provider_errors),
            reraise=True,
        ):
            with attempt:
                return await answer(prompt)
        raise AssertionError("unreachable")

    benchmark(batch_of(loop, _calls(retried)))


def test_purgatory_breaker(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    """purgatory's in-memory circuit breaker around the same call: a breaker only."""
    breakers = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)

    async def guarded(prompt: str) -> str:
        async with await breakers.get_breaker("bench"):
            return await answer(prompt)

    loop.run_until_complete(guarded("warm"))
    benchmark(batch_of(loop, _calls(guarded)))
