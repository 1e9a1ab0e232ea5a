"""In-process cost of the pipeline helpers against what a team writes by hand, in the same run
and group; run with ``pytest tests/benchmarks/test_pipelines.py --benchmark-only``.

Each helper has its own block below (fan-out, deferred work in process and durable, offloaded
calls), on one uvloop loop (as ``test_micro.py``); read each toolkit row against the
hand-written row of its group, as a ratio. The durable hand-off includes its round trip to a
real redis-server on loopback, as its anchor does.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio.to_thread
import pytest
import redis.asyncio as aioredis
import uvloop
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from pytest_benchmark.fixture import BenchmarkFixture
from saq import Job
from saq.queue.redis import RedisQueue

import toolkit
from tests.benchmarks.apps import discarding_tracer_provider
from tests.benchmarks.test_micro import BATCH
from toolkit.pipelines.deferred._background import set_current_runner
from toolkit.pipelines.deferred._in_process import InProcessRunner
from toolkit.pipelines.deferred._runners import deferred_runner
from toolkit.pipelines.deferred.durable._runner import DurableRunner
from toolkit.pipelines.fanout._telemetry import FanoutTelemetry, set_current_fanout_telemetry
from toolkit.pipelines.offloading._decorator import set_current_offload_pool
from toolkit.pipelines.offloading._pool import OffloadPool
from toolkit.settings import DeferSettings, DurableSettings, OffloadSettings, ToolkitSettings


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = uvloop.new_event_loop()
    yield event_loop
    event_loop.close()


# --- fan-out (toolkit.gather) -------------------------------------------------------------------
# Overhead per branch: BRANCHES branches that answer at once, each with a deadline, so what is
# timed is the machinery (tasks, timeouts, results, and for the toolkit its spans and metric),
# not the work. The hand-written rival is what the issue found in real servers: asyncio.gather
# of each call under its own asyncio.timeout, return_exceptions=True, under an overall timeout.

BRANCHES = 3
FANOUTS = 200
"""Fan-outs per benchmark round: the per-branch cost is a round's time / (FANOUTS x BRANCHES)."""


async def _search(query: str) -> list[str]:
    return [query]


async def _hand_written(query: str) -> list[Any]:
    async def bounded(call: Callable[[str], Awaitable[list[str]]]) -> list[str]:
        async with asyncio.timeout(0.3):
            return await call(query)

    async with asyncio.timeout(1.0):
        return await asyncio.gather(
            *(bounded(_search) for _ in range(BRANCHES)), return_exceptions=True
        )


async def _with_toolkit(query: str) -> toolkit.pipelines.GatherResult:
    return await toolkit.gather(
        *(
            toolkit.branch(f"store{i}", _search, query, deadline=0.3, fallback=[])
            for i in range(BRANCHES)
        ),
        deadline=1.0,
    )


def _rounds(loop: asyncio.AbstractEventLoop, fanout: Callable[[str], Awaitable[Any]]) -> Any:
    async def round_of() -> None:
        for _ in range(FANOUTS):
            await fanout("lyon")

    return lambda: loop.run_until_complete(round_of())


@pytest.fixture
def fanout_telemetry(meter_provider: MeterProvider) -> Iterator[TracerProvider]:
    """Spans recorded, batched and discarded, as in a traced server."""
    provider = discarding_tracer_provider()
    set_current_fanout_telemetry(
        FanoutTelemetry(tracer_provider=provider, meter_provider=meter_provider)
    )
    yield provider
    set_current_fanout_telemetry(None)
    provider.shutdown()


def test_fanout_hand_written_gather_with_timeouts(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop
) -> None:
    """The anchor: asyncio.gather of asyncio.timeout-bounded calls, under an overall timeout."""
    benchmark.group = "fan-out"
    benchmark(_rounds(loop, _hand_written))


def test_fanout_toolkit_gather(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    fanout_telemetry: TracerProvider,
) -> None:
    """toolkit.gather: nested deadlines, fallbacks, a recorded span per branch and the fan-out,
    the branch-duration histogram."""
    benchmark.group = "fan-out"
    benchmark(_rounds(loop, _with_toolkit))


def test_fanout_toolkit_gather_switched_off(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    fanout_telemetry: TracerProvider,
) -> None:
    """The ``pipelines.gather`` flag off: the plain asyncio.gather path it falls back to."""
    benchmark.group = "fan-out"
    with toolkit.flags.override({toolkit.flags.PIPELINES_GATHER: "off"}):
        benchmark(_rounds(loop, _with_toolkit))


# --- end of fan-out ----------------------------------------------------------------------------

# --- deferred work: the hand-off (toolkit.defer, fn.defer) -----------------------------------
# Timed: BATCH hand-offs in one pass of the loop, the tasks not run yet; each round's tasks
# then run outside the timing (the setup of the next round), so the queue starts empty.


async def store_memory(profile_id: str, text: str) -> None:
    pass


@pytest.fixture
def runner(
    loop: asyncio.AbstractEventLoop,
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


def _hand_offs(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    batch: Any,
    settle: Any,
) -> None:
    def setup() -> None:
        loop.run_until_complete(settle())

    benchmark.pedantic(lambda: loop.run_until_complete(batch()), setup=setup, rounds=30)


def test_deferred_hand_off(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    runner: InProcessRunner,
) -> None:
    """``await toolkit.defer(fn, ...)`` to the in-process runner: the flag, the record, the
    queue, the counts and the span event (no span recording here: none is current)."""

    async def batch() -> None:
        for _ in range(BATCH):
            await toolkit.defer(store_memory, "p1", "I moved to Lyon")

    _hand_offs(benchmark, loop, batch, runner._queue.join)


def test_background_hand_off(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    runner: InProcessRunner,
) -> None:
    """``await fn.defer(...)`` of a ``@background`` function (its spec made once)."""
    extract = toolkit.background(name="bench.extract")(store_memory)

    async def batch() -> None:
        for _ in range(BATCH):
            await extract.defer("p1", "I moved to Lyon")

    _hand_offs(benchmark, loop, batch, runner._queue.join)


def test_hand_written_create_task(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
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

    _hand_offs(benchmark, loop, batch, settle)


# --- deferred work in durable mode: the hand-off to SAQ's queue in Redis ---------------------
# Timed: DURABLE_BATCH hand-offs one after another, each returning once Redis holds the task
# (a loopback round trip to the suite's redis-server); no worker runs, and each round starts
# on an empty database. The anchor is SAQ's own ``queue.enqueue`` of a job for the same call,
# with the same job options, on the same Redis: what the toolkit adds is the flag, the task
# record and its JSON check, the hand-off timeout, its counter and histogram.

DURABLE_BATCH = 200
"""Hand-offs per timed batch: the per-hand-off cost is a round's time / DURABLE_BATCH."""


@toolkit.background(name="bench.durable.remember", retries=0)
async def remember_durably(profile_id: str, text: str) -> None:
    """The deferred function: registered, so that a worker could find it by its name."""


def _durable_settings(url: str) -> ToolkitSettings:
    return ToolkitSettings(defer={"journal": None, "durable": {"enabled": True, "url": url}})


@pytest.fixture
def empty_redis(loop: asyncio.AbstractEventLoop, redis_url: str) -> Iterator[Callable[[], Any]]:
    """Empties the suite's Redis: each round's setup, so that no round inherits the queue the
    last one filled."""
    client = aioredis.from_url(redis_url)
    yield client.flushdb
    loop.run_until_complete(client.aclose())


@pytest.fixture
def durable_runner(
    loop: asyncio.AbstractEventLoop, redis_url: str, meter_provider: MeterProvider
) -> Iterator[DurableRunner]:
    """The deferring side as install() makes it (no worker in the app), current."""
    runner = deferred_runner(_durable_settings(redis_url), meter_provider=meter_provider)
    assert isinstance(runner, DurableRunner)
    loop.run_until_complete(runner.start())
    set_current_runner(runner)
    yield runner
    set_current_runner(None)
    loop.run_until_complete(runner.drain(5))


def test_durable_hand_off(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    durable_runner: DurableRunner,
    empty_redis: Callable[[], Any],
) -> None:
    """``await toolkit.defer(fn, ...)`` in durable mode: the flag, the record, its JSON check,
    SAQ's enqueue within the hand-off timeout, the outcome counted and timed."""
    benchmark.group = "durable hand-off"

    async def batch() -> None:
        for _ in range(DURABLE_BATCH):
            await toolkit.defer(remember_durably, "p1", "I moved to Lyon")

    _hand_offs(benchmark, loop, batch, empty_redis)
    assert durable_runner.local._queue.empty()  # every task went to Redis, none ran here


def test_saq_enqueue(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    redis_url: str,
    empty_redis: Callable[[], Any],
) -> None:
    """The anchor: SAQ's ``RedisQueue.enqueue`` of a job for the same call (keyed per
    hand-off, the same time limit, heartbeat, retries and ttl), on its own connection."""
    benchmark.group = "durable hand-off"
    settings = DurableSettings()
    queue = RedisQueue(aioredis.from_url(redis_url), name=settings.queue)

    async def batch() -> None:
        for _ in range(DURABLE_BATCH):
            job = Job(
                function="bench.durable.remember",
                kwargs={"profile_id": "p1", "text": "I moved to Lyon"},
                key=uuid.uuid4().hex,
                timeout=math.ceil(settings.timeout),
                heartbeat=math.ceil(settings.heartbeat),
                retries=1 + settings.redeliveries,
                ttl=math.ceil(settings.keep),
            )
            if await queue.enqueue(job) is None:
                raise AssertionError("SAQ refused a new key")

    _hand_offs(benchmark, loop, batch, empty_redis)
    loop.run_until_complete(queue.disconnect())


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
