"""Cost of borrowing from a warm AgentPool; run with ``pytest --benchmark-only``.

Batches of ``BATCH`` borrows (``async with ...: pass``) on one uvloop loop (``test_micro.py``),
each finding an idle object, so the columns are the pools' own cost: read them against
``test_bare_block`` (an async context manager that does nothing) and against the two usual
hand-made pools doing the same job in the same run, an ``asyncio.Semaphore`` and an
``asyncio.Queue`` of built objects. The per-acquire p50/p99 under concurrency (waits included)
is ``python -m tests.benchmarks.pool_latency``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from pytest_benchmark.fixture import BenchmarkFixture

import toolkit
from tests.benchmarks.test_micro import batch_of, loop  # noqa: F401 - the fixture
from toolkit.flags import FlagStore
from toolkit.settings import PoolMode

SIZE = 8


class Agent:
    """What the pools lend: built at once, it is the borrowing that is measured."""

    async def aclose(self) -> None: ...


class NoopBlock:
    """The anchor: an async context manager that does nothing."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class QueuePool:
    """The hand-made pool: ``SIZE`` built objects in an ``asyncio.Queue``, no timeout, no
    bounded wait, no recycling, no telemetry."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Agent] = asyncio.Queue()
        for _ in range(size):
            self.queue.put_nowait(Agent())

    def acquire(self) -> QueueLease:
        return QueueLease(self.queue)


class QueueLease:
    __slots__ = ("obj", "queue")

    def __init__(self, queue: asyncio.Queue[Agent]) -> None:
        self.queue = queue

    async def __aenter__(self) -> Agent:
        self.obj = await self.queue.get()
        return self.obj

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.queue.put_nowait(self.obj)


def _borrows(acquire: Callable[[], Any]) -> Callable[[], Awaitable[None]]:
    async def borrow() -> None:
        async with acquire():
            pass

    return borrow


def _warm_pool(
    loop: asyncio.AbstractEventLoop,  # noqa: F811 - the fixture
    meter_provider: metrics.MeterProvider,
    mode: PoolMode,
) -> toolkit.AgentPool[Agent]:
    """Started as install() starts it: its warm objects built, the app's flag store and meter
    provider (recording into an in-memory reader)."""
    pool = toolkit.AgentPool(Agent, mode=mode, size=SIZE, warm=SIZE)
    loop.run_until_complete(pool.start(flags=FlagStore(), meter_provider=meter_provider))
    assert pool.stats().idle == (1 if mode == "shared" else SIZE)
    return pool


def test_bare_block(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    """The anchor: ``async with`` a context manager that does nothing."""
    benchmark(batch_of(loop, _borrows(NoopBlock)))


def test_semaphore(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    """``async with asyncio.Semaphore(SIZE)``: bounded concurrency and nothing else."""
    semaphore = asyncio.Semaphore(SIZE)
    benchmark(batch_of(loop, _borrows(lambda: semaphore)))


def test_queue_pool(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    """``await queue.get()`` and ``queue.put_nowait()``: the usual hand-made object pool."""
    pool = QueuePool(SIZE)
    benchmark(batch_of(loop, _borrows(pool.acquire)))


@pytest.mark.parametrize("mode", ["exclusive", "shared"])
def test_agent_pool(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811
    meter_provider: MeterProvider,
    mode: PoolMode,
) -> None:
    """``async with pool.acquire()`` on a warm pool: the pool flag, a permit, an idle object
    (exclusive) or the key's object (shared), the wait and use times recorded, the object
    given back."""
    pool = _warm_pool(loop, meter_provider, mode)
    try:
        benchmark(batch_of(loop, _borrows(pool.acquire)))
        stats = pool.stats()
        assert (stats.used, stats.holders, stats.pending, stats.creating) == (0, 0, 0, 0)
    finally:
        loop.run_until_complete(pool.close())


def test_agent_pool_without_metrics(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    """The same borrow (exclusive) on a no-op meter provider: the pool's own work, without the
    two histogram records (wait and use time) the SDK takes about 5 µs each to make."""
    pool = _warm_pool(loop, NoOpMeterProvider(), "exclusive")
    try:
        benchmark(batch_of(loop, _borrows(pool.acquire)))
    finally:
        loop.run_until_complete(pool.close())


def test_pooled_decorator(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811
    meter_provider: MeterProvider,
) -> None:
    """A call through ``@toolkit.pooled(pool)`` (exclusive), the object passed in."""
    pool = _warm_pool(loop, meter_provider, "exclusive")

    @toolkit.pooled(pool)
    async def answer(agent: Agent, prompt: str) -> str:
        return prompt

    try:
        benchmark(batch_of(loop, lambda: answer("hello")))
    finally:
        loop.run_until_complete(pool.close())
