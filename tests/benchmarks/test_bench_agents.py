"""What the agent layer adds per traced model call and per step, with a recording span and
real metric aggregation (the issue's target: under 20 µs each); run with
``pytest --benchmark-only --benchmark-timer=time.process_time`` (as ``make bench`` does: CPU
time, the span export thread's included, so that waiting for a shared CPU is not counted).

Every benchmark times a batch of ``BATCH`` operations: read each against its bare twins in the
same run and group (``test_bare_*``: the same work with nothing around it, and with a bare
``tracer.start_as_current_span`` on the same tracer provider), per operation (the column
divided by ``BATCH``). The model call through the real OpenAI SDK, against OpenLLMetry, is
``python -m tests.benchmarks.llm_overhead``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import uvloop
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from pytest_benchmark.fixture import BenchmarkFixture

import toolkit
from tests.benchmarks.apps import discarding_tracer_provider
from toolkit.agents import AgentTelemetry, set_current_agent_telemetry
from toolkit.settings import AgentSettings

BATCH = 1000
PRICES = {"gpt-4o": {"input": 2.5, "output": 10.0}}


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = uvloop.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture(autouse=True)
def recording() -> Iterator[TracerProvider]:
    """Recording spans (exported in batches, then discarded) and metrics aggregated by a real
    reader, as in production; the tracer provider, for the bare spans."""
    tracer_provider = discarding_tracer_provider()
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    set_current_agent_telemetry(
        AgentTelemetry(
            AgentSettings.model_validate({"prices": PRICES}),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
    )
    yield tracer_provider
    set_current_agent_telemetry(None)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_bare_model_call(benchmark: BenchmarkFixture) -> None:
    """The baseline: the work of the block below, without the recorder."""
    benchmark.group = "model call"

    def batch() -> None:
        for _ in range(BATCH):
            usage = {"input_tokens": 812, "output_tokens": 96}
            del usage

    benchmark(batch)


def test_traced_model_call(benchmark: BenchmarkFixture) -> None:
    """A chat call with its answer, usage and cost: span, duration, two token points, cost."""
    benchmark.group = "model call"

    def batch() -> None:
        for _ in range(BATCH):
            with toolkit.llm_call("gpt-4o", provider="openai") as call:
                call.response(model="gpt-4o", finish_reasons=["stop"])
                call.usage(input_tokens=812, output_tokens=96)

    benchmark(batch)


def test_traced_streamed_call(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """A streamed call of 20 chunks handed over and drained (time to first chunk too)."""
    benchmark.group = "streamed model call"

    async def chunks() -> AsyncIterator[int]:
        for i in range(20):
            yield i

    async def run() -> None:
        for _ in range(BATCH):
            async with toolkit.llm_call("gpt-4o", provider="openai") as call:
                stream = call.stream(chunks())
            async for _chunk in stream:
                pass
            call.usage(input_tokens=812, output_tokens=20)

    benchmark(lambda: loop.run_until_complete(run()))


def test_bare_streamed_chunks(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """The baseline of the streamed call: the same chunks drained without the recorder."""
    benchmark.group = "streamed model call"

    async def chunks() -> AsyncIterator[int]:
        for i in range(20):
            yield i

    async def run() -> None:
        for _ in range(BATCH):
            async for _chunk in chunks():
                pass

    benchmark(lambda: loop.run_until_complete(run()))


def test_bare_block(benchmark: BenchmarkFixture) -> None:
    """The anchor of the steps: an empty block, nothing around it."""
    benchmark.group = "step, context manager"

    def batch() -> None:
        for _ in range(BATCH):
            pass

    benchmark(batch)


def test_bare_span(benchmark: BenchmarkFixture, recording: TracerProvider) -> None:
    """The block in a bare ``tracer.start_as_current_span`` on the same provider: what
    OpenTelemetry alone costs, against which the step's own work is read."""
    benchmark.group = "step, context manager"
    tracer = recording.get_tracer("bench")

    def batch() -> None:
        for _ in range(BATCH):
            with tracer.start_as_current_span("rerank"):
                pass

    benchmark(batch)


def test_step_context_manager(benchmark: BenchmarkFixture) -> None:
    """``with toolkit.step(...)``: a span and a duration point per step."""
    benchmark.group = "step, context manager"
    rerank = toolkit.step("rerank")

    def batch() -> None:
        for _ in range(BATCH):
            with rerank:
                pass

    benchmark(batch)


def test_step_decorator(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """An async function decorated with ``@toolkit.step``, against ``test_bare_coroutine``."""
    benchmark.group = "step, decorator"

    @toolkit.step("memory.m1")
    async def recall() -> int:
        return 1

    async def run() -> None:
        for _ in range(BATCH):
            await recall()

    benchmark(lambda: loop.run_until_complete(run()))


def test_bare_coroutine(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """The anchor of the decorator: the same coroutine, nothing around it."""
    benchmark.group = "step, decorator"

    async def recall() -> int:
        return 1

    async def run() -> None:
        for _ in range(BATCH):
            await recall()

    benchmark(lambda: loop.run_until_complete(run()))


def test_bare_span_coroutine(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, recording: TracerProvider
) -> None:
    """The same coroutine, its body in a bare ``tracer.start_as_current_span``."""
    benchmark.group = "step, decorator"
    tracer = recording.get_tracer("bench")

    async def recall() -> int:
        with tracer.start_as_current_span("memory.m1"):
            return 1

    async def run() -> None:
        for _ in range(BATCH):
            await recall()

    benchmark(lambda: loop.run_until_complete(run()))


def test_traced_agent_run(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """An async ``@traced_agent`` run with its conversation id (against the coroutine)."""
    benchmark.group = "step, decorator"

    @toolkit.traced_agent("support", conversation="session")
    async def answer(question: str, session: str) -> str:
        return question

    async def run() -> None:
        for _ in range(BATCH):
            await answer("q", session="s-1")

    benchmark(lambda: loop.run_until_complete(run()))


def test_step_switched_off(benchmark: BenchmarkFixture) -> None:
    """The ``tracing.agents`` flag off: what a step costs when nothing is recorded."""
    benchmark.group = "step, context manager"
    rerank = toolkit.step("rerank")

    def batch() -> None:
        with toolkit.flags.override({toolkit.flags.TRACING_AGENTS: "off"}):
            for _ in range(BATCH):
                with rerank:
                    pass

    benchmark(batch)
