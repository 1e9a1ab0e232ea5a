"""Cost of the pipeline helpers against what a team would write by hand, in the same run;
run with ``pytest --benchmark-only``. Each block is one helper's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio.to_thread
import pytest
import uvloop
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from pytest_benchmark.fixture import BenchmarkFixture

import toolkit
from tests.benchmarks.apps import discarding_tracer_provider
from toolkit.pipelines._offload import set_current_offload_pool
from toolkit.pipelines._offload_pool import OffloadPool
from toolkit.settings import OffloadSettings


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One uvloop loop per module, as under uvicorn."""
    event_loop = uvloop.new_event_loop()
    yield event_loop
    event_loop.close()


# --- offloaded calls: @toolkit.offload / toolkit.run_sync against anyio.to_thread.run_sync ----

OFFLOAD_BATCH = 200
"""Calls per timed batch: one after another, or ``OFFLOAD_CONCURRENCY`` at a time."""
OFFLOAD_CONCURRENCY = 20
"""Calls in flight at once in the concurrent batches (within both pools' bounds: 40, 32)."""


def _nothing() -> None:
    """The call offloaded: no work, so the batch times the hand-off to a thread and back."""


@toolkit.offload
def _offloaded_nothing() -> None:
    """The same, decorated."""


def _offload_batch(
    loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[Any]], concurrent: bool
) -> Callable[[], None]:
    async def batch() -> None:
        if concurrent:
            for _ in range(OFFLOAD_BATCH // OFFLOAD_CONCURRENCY):
                await asyncio.gather(*(call() for _ in range(OFFLOAD_CONCURRENCY)))
        else:
            for _ in range(OFFLOAD_BATCH):
                await call()

    return lambda: loop.run_until_complete(batch())


@pytest.fixture
def offload_pool() -> Iterator[OffloadPool]:
    """The current pool, traced and measured as installed: spans batched then discarded."""
    tracer_provider: TracerProvider = discarding_tracer_provider()
    meter_provider = MeterProvider()
    pool = OffloadPool(
        OffloadSettings(threads=32), tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    set_current_offload_pool(pool)
    yield pool
    set_current_offload_pool(None)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
def test_anyio_to_thread_run_sync(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, concurrent: bool
) -> None:
    """The anchor: anyio's worker threads and default limiter, as FastAPI's sync routes."""
    benchmark(_offload_batch(loop, lambda: anyio.to_thread.run_sync(_nothing), concurrent))


@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
def test_offload_run_sync(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    offload_pool: OffloadPool,
    concurrent: bool,
) -> None:
    """toolkit.run_sync: the flag, the permit, a span, two histograms, the thread hand-off."""
    benchmark(_offload_batch(loop, lambda: toolkit.run_sync(_nothing), concurrent))


def test_offload_decorated(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, offload_pool: OffloadPool
) -> None:
    """@toolkit.offload: the same as run_sync, its name worked out at decoration."""
    benchmark(_offload_batch(loop, _offloaded_nothing, False))


def test_offload_switched_off(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, offload_pool: OffloadPool
) -> None:
    """pipelines.offload off: the function called inline, the flag read per call."""
    with toolkit.flags.override({toolkit.flags.PIPELINES_OFFLOAD: "off"}):
        benchmark(_offload_batch(loop, _offloaded_nothing, False))
