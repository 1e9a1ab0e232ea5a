"""What the agent layer adds per traced model call and per step, with a recording span and
real metric aggregation (the target: under 20 µs each of the toolkit's own work, read against
the ``test_bare_sdk_*`` twins, as docs/design-notes.md explains); run with
``pytest --benchmark-only --benchmark-timer=time.process_time`` (as ``make bench`` does: CPU
time, the span export thread's included, so that waiting for a shared CPU is not counted).

Every benchmark times a batch of ``BATCH`` operations: read each against its bare twins in the
same run and group (``test_bare_*``: the same work with nothing around it, with a bare
``tracer.start_as_current_span`` on the same tracer provider, and ``test_bare_sdk_*``: what
the toolkit asks of the OpenTelemetry SDK, made by hand, each point recorded at once), per
operation (the column divided by ``BATCH``); the toolkit's histogram points reach the SDK in
batches of ``toolkit.telemetry.batched.BATCH``, so every batch of operations here pays for
its points.
The model call through the real OpenAI SDK, against OpenLLMetry, is
``python -m tests.benchmarks.llm_overhead``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import uvloop
from opentelemetry import context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from pytest_benchmark.fixture import BenchmarkFixture

import toolkit
from tests.benchmarks.apps import discarding_tracer_provider
from toolkit.agents import AgentTelemetry, current_agent_telemetry, set_current_agent_telemetry
from toolkit.settings import AgentSettings
from toolkit.telemetry import names

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


def test_bare_sdk_model_call(benchmark: BenchmarkFixture, recording: TracerProvider) -> None:
    """What ``test_traced_model_call`` asks of the OpenTelemetry SDK (its span with the same
    attributes, the duration and two token points with the same attribute sets), made by
    hand, each point recorded at once; the cost, a dict update in the toolkit, is one here.
    The toolkit hands its points to the SDK in batches (``toolkit.telemetry.batched``),
    which is cheaper than this."""
    benchmark.group = "model call"
    telemetry = current_agent_telemetry()
    tracer = recording.get_tracer("bench")
    request = {
        names.GEN_AI_OPERATION_NAME: "chat",
        names.GEN_AI_PROVIDER_NAME: "openai",
        names.GEN_AI_REQUEST_MODEL: "gpt-4o",
    }
    duration = {**request, names.GEN_AI_RESPONSE_MODEL: "gpt-4o"}
    tokens = [
        (812, {**duration, names.GEN_AI_TOKEN_TYPE: names.GEN_AI_TOKEN_INPUT}),
        (96, {**duration, names.GEN_AI_TOKEN_TYPE: names.GEN_AI_TOKEN_OUTPUT}),
    ]
    cost: dict[str, float] = {}

    def batch() -> None:
        for _ in range(BATCH):
            span = tracer.start_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes=request)
            token = context.attach(trace.set_span_in_context(span))
            started = time.perf_counter()
            context.detach(token)
            span.set_attributes(
                {
                    names.GEN_AI_RESPONSE_MODEL: "gpt-4o",
                    names.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
                    names.GEN_AI_USAGE_INPUT_TOKENS: 812,
                    names.GEN_AI_USAGE_OUTPUT_TOKENS: 96,
                    names.GEN_AI_COST_ATTRIBUTE: 0.003,
                }
            )
            span.end()
            telemetry.operation_duration.record(time.perf_counter() - started, duration)
            for count, attributes in tokens:
                telemetry.token_usage.record(count, attributes)
            cost["gpt-4o"] = cost.get("gpt-4o", 0.0) + 0.003

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


def test_bare_sdk_step(benchmark: BenchmarkFixture) -> None:
    """What ``test_step_context_manager`` asks of the OpenTelemetry SDK (its span with
    ``toolkit.step.name``, current inside the block, and its duration point with the same
    attributes), made by hand, the point recorded at once (the toolkit batches them)."""
    benchmark.group = "step, context manager"
    telemetry = current_agent_telemetry()
    attributes = {names.STEP_NAME: "rerank"}

    def batch() -> None:
        for _ in range(BATCH):
            span = telemetry.tracer.start_span(
                "rerank", kind=SpanKind.INTERNAL, attributes=attributes
            )
            token = context.attach(trace.set_span_in_context(span))
            started = time.perf_counter()
            context.detach(token)
            span.end()
            telemetry.step_duration.record(time.perf_counter() - started, attributes)

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
