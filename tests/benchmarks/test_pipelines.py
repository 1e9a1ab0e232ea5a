"""Cost of the pipeline helpers; run with ``pytest --benchmark-only``.

Batches of ``BATCH`` calls on one uvloop loop (``test_micro.py``): read each helper against
the hand-written code doing the same job in the same run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from pytest_benchmark.fixture import BenchmarkFixture

import toolkit
from tests.benchmarks.test_micro import BATCH, loop  # noqa: F401 - the fixture
from toolkit.pipelines._background import set_current_runner
from toolkit.pipelines._in_process import InProcessRunner
from toolkit.settings import DeferSettings

# --- deferred work: the hand-off (toolkit.defer, fn.defer) -----------------------------------
# Timed: BATCH hand-offs in one pass of the loop, the tasks not run yet; each round's tasks
# then run outside the timing (the setup of the next round), so the queue starts empty.


async def store_memory(profile_id: str, text: str) -> None:
    pass


@pytest.fixture
def runner(
    loop: asyncio.AbstractEventLoop,  # noqa: F811 - the fixture
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> Iterator[InProcessRunner]:
    deferred = InProcessRunner(
        DeferSettings(queue_size=BATCH, journal=None),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    loop.run_until_complete(deferred.start())
    set_current_runner(deferred)
    yield deferred
    loop.run_until_complete(deferred.drain(5))


def _rounds(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811
    batch: Any,
    settle: Any,
) -> None:
    def setup() -> None:
        loop.run_until_complete(settle())

    benchmark.pedantic(lambda: loop.run_until_complete(batch()), setup=setup, rounds=30)


def test_deferred_hand_off(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811
    runner: InProcessRunner,
) -> None:
    """``await toolkit.defer(fn, ...)`` to the in-process runner: the flag, the record, the
    queue, the counts and the span event (no span recording here: none is current)."""

    async def batch() -> None:
        for _ in range(BATCH):
            await toolkit.defer(store_memory, "p1", "I moved to Lyon")

    _rounds(benchmark, loop, batch, runner._queue.join)


def test_background_hand_off(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811
    runner: InProcessRunner,
) -> None:
    """``await fn.defer(...)`` of a ``@background`` function (its spec made once)."""
    extract = toolkit.background(name="bench.extract")(store_memory)

    async def batch() -> None:
        for _ in range(BATCH):
            await extract.defer("p1", "I moved to Lyon")

    _rounds(benchmark, loop, batch, runner._queue.join)


def test_hand_written_create_task(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    """The anchor: the fire-and-forget a team writes by hand, a task held in a set (no bound,
    no retries, no drain, no telemetry)."""
    held: set[asyncio.Task[None]] = set()

    async def batch() -> None:
        for _ in range(BATCH):
            task = asyncio.get_running_loop().create_task(store_memory("p1", "I moved to Lyon"))
            held.add(task)
            task.add_done_callback(held.discard)

    async def settle() -> None:
        await asyncio.gather(*held)

    _rounds(benchmark, loop, batch, settle)
