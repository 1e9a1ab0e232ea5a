"""@resilient on an async generator function: breaker, retries, timeout and fallback until the
first chunk, never after it; early closes are no failure; every decision on the span and in a
metric."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import Message

import toolkit
from tests.support.asgi import http_scope
from tests.support.otel import points
from tests.support.waiting import eventually
from toolkit.backends import Backend
from toolkit.errors import CircuitOpenError, ConfigurationError, DeadlineExceeded
from toolkit.flags import RESILIENCE, FlagStore
from toolkit.resilience import (
    BreakerRegistry,
    CircuitBreaker,
    RetryPolicy,
    current_breakers,
    set_current_breakers,
)
from toolkit.telemetry import names

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


class ProviderError(Exception):
    pass


async def no_wait(seconds: float) -> None:
    del seconds


def retrying(attempts: int = 3) -> RetryPolicy:
    return RetryPolicy(
        on=ProviderError, attempts=attempts, wait_initial=0, wait_jitter=0, sleep=no_wait
    )


class Source:
    """A provider's stream: fails its first ``failures`` attempts before any chunk, then yields
    ``chunks`` (failing after ``fail_after`` of them when set); records every attempt and
    every close."""

    def __init__(
        self,
        chunks: list[str],
        *,
        failures: int = 0,
        fail_after: int | None = None,
        pause: float = 0.0,
        first_pause: float = 0.0,
    ) -> None:
        self.chunks = chunks
        self.failures = failures
        self.fail_after = fail_after
        self.pause = pause
        self.first_pause = first_pause
        self.attempts = 0
        self.closed = 0
        self.finished = 0

    async def stream(self, prompt: str) -> AsyncIterator[str]:
        self.attempts += 1
        try:
            await asyncio.sleep(self.first_pause)
            if self.attempts <= self.failures:
                raise ProviderError(f"attempt {self.attempts} failed")
            for i, chunk in enumerate(self.chunks):
                if i == self.fail_after:
                    raise ProviderError("broke mid-stream")
                if i:
                    await asyncio.sleep(self.pause)
                yield f"{prompt}:{chunk}"
            self.finished += 1
        finally:
            self.closed += 1


def breaker(**options: Any) -> CircuitBreaker:
    """A breaker of the current registry (its metrics on the test's reader)."""
    options = {"minimum_calls": 2, "failure_rate": 0.5, "open_duration": 60, **options}
    return current_breakers().get(f"s-{uuid.uuid4().hex[:6]}", **options)


def outcomes(reader: InMemoryMetricReader) -> dict[str, Any]:
    """The breaker's calls by outcome."""
    return {
        p.attributes[names.CIRCUIT_BREAKER_OUTCOME]: p.value
        for p in points(reader, names.CIRCUIT_BREAKER_CALLS)
        if p.value
    }


async def read(stream: AsyncIterator[str], into: list[str]) -> None:
    """Consume ``stream`` into ``into``, so that what arrived before an error is kept."""
    async for chunk in stream:
        into.append(chunk)


def stream_outcomes(reader: InMemoryMetricReader) -> dict[str, int]:
    return {
        p.attributes[names.RESILIENCE_STREAM_OUTCOME]: p.count
        for p in points(reader, names.RESILIENCE_STREAM_DURATION)
    }


def retries(reader: InMemoryMetricReader) -> dict[str, int]:
    return {
        p.attributes[names.RESILIENCE_FUNCTION]: p.value
        for p in points(reader, names.RETRY_ATTEMPTS)
    }


@pytest.fixture
def registry(meter_provider: MeterProvider) -> BreakerRegistry:
    registry = BreakerRegistry(meter_provider=meter_provider)
    set_current_breakers(registry)
    return registry


# --- before the first chunk: retries, timeout, fallback ------------------------------------------


async def test_a_stream_that_fails_before_its_first_chunk_is_retried_and_each_attempt_closed(
    registry: BreakerRegistry, metric_reader: InMemoryMetricReader
) -> None:
    """Two attempts fail before any chunk; the third streams. The consumer sees one clean
    stream, every failed generator was closed, and the breaker counts one success."""
    source = Source(["a", "b", "c"], failures=2)
    guard = registry.get("llm")
    answer = toolkit.resilient(breaker="llm", retries=retrying(), timeout=None)(source.stream)
    assert [chunk async for chunk in answer("p")] == ["p:a", "p:b", "p:c"]
    assert (source.attempts, source.closed, source.finished) == (3, 3, 1)
    await guard.settle()
    assert outcomes(metric_reader) == {"success": 1}
    assert stream_outcomes(metric_reader) == {"complete": 1}
    first = points(metric_reader, names.RESILIENCE_STREAM_TIME_TO_FIRST_CHUNK)
    assert [p.count for p in first] == [1]
    assert retries(metric_reader) == {"Source.stream": 2}


async def test_timeout_bounds_the_first_chunk_not_the_whole_stream(
    registry: BreakerRegistry,
) -> None:
    """timeout= is the time to the first chunk: a stream whose first chunk is quick runs past
    it to the end; one whose first chunk is late is cut, its generator closed."""
    steady = Source(["a", "b", "c", "d"], pause=0.05)  # 150 ms in all, first chunk at once
    answer = toolkit.resilient(timeout=0.06)(steady.stream)
    assert [chunk async for chunk in answer("p")] == ["p:a", "p:b", "p:c", "p:d"]

    late = Source(["a"], first_pause=10)
    slow = toolkit.resilient(timeout=0.05)(late.stream)
    with pytest.raises(TimeoutError):
        [chunk async for chunk in slow("p")]
    assert late.closed == 1


@pytest.mark.parametrize("kind", ["generator", "coroutine"])
async def test_the_fallback_streams_instead_when_the_stream_fails_before_its_first_chunk(
    registry: BreakerRegistry,
    metric_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    kind: str,
) -> None:
    """Failed after its retries, or refused by the open breaker: the fallback's chunks are
    streamed, with the fallback event (``error.type``) on the current span, never stored by
    an enclosing @cached."""
    source = Source(["a"], failures=100)

    async def canned_chunks(prompt: str) -> AsyncIterator[str]:
        yield "sorry,"
        yield " later"

    async def canned_list(prompt: str) -> list[str]:
        return ["sorry,", " later"]

    fallback: Any = canned_chunks if kind == "generator" else canned_list
    guard = breaker(minimum_calls=1, failure_rate=0.5)
    answer = toolkit.resilient(breaker=guard, retries=retrying(2), fallback=fallback, timeout=None)(
        source.stream
    )
    with tracer_provider.get_tracer("t").start_as_current_span("chat"):
        assert [c async for c in answer("p")] == ["sorry,", " later"]
        await guard.settle()
        assert guard.state == "open"
        assert [c async for c in answer("p")] == ["sorry,", " later"]  # refused: not called
    assert source.attempts == 2
    [span] = span_exporter.get_finished_spans()
    fallbacks = [e for e in span.events if e.name == names.RESILIENCE_FALLBACK_EVENT]
    assert [e.attributes[names.ERROR_TYPE] for e in fallbacks] == ["ProviderError", "circuit_open"]
    assert stream_outcomes(metric_reader) == {"fallback": 2}
    fell_back = {
        (
            p.attributes[names.RESILIENCE_FUNCTION],
            p.attributes[names.RESILIENCE_FALLBACK_REASON],
        ): p.value
        for p in points(metric_reader, names.RESILIENCE_FALLBACKS)
    }
    assert fell_back == {("Source.stream", "error"): 1, ("Source.stream", "circuit_open"): 1}
    assert retries(metric_reader) == {"Source.stream": 1}  # the refused call made none


# --- after the first chunk: never retried, never a fallback --------------------------------------


async def test_an_error_after_the_first_chunk_reaches_the_consumer_and_counts_as_a_failure(
    registry: BreakerRegistry,
    metric_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """The consumer has two chunks when the provider breaks: neither a retry (it would send a
    second beginning) nor the fallback; the error reaches the consumer, the breaker counts a
    failure, the span says how many chunks had gone out."""
    source = Source(["a", "b", "c"], fail_after=2)

    async def canned(prompt: str) -> AsyncIterator[str]:
        yield "canned"

    guard = breaker()
    answer = toolkit.resilient(breaker=guard, retries=retrying(), fallback=canned, timeout=None)(
        source.stream
    )
    received: list[str] = []
    with (
        tracer_provider.get_tracer("t").start_as_current_span("chat"),
        pytest.raises(ProviderError, match="mid-stream"),
    ):
        await read(answer("p"), received)
    assert received == ["p:a", "p:b"]
    assert source.attempts == 1
    await guard.settle()
    [span] = span_exporter.get_finished_spans()
    [event] = [e for e in span.events if e.name == names.RESILIENCE_STREAM_INTERRUPTED_EVENT]
    assert event.attributes[names.RESILIENCE_STREAM_CHUNKS] == 2
    assert event.attributes[names.ERROR_TYPE] == "ProviderError"
    assert not [e for e in span.events if e.name == names.RESILIENCE_FALLBACK_EVENT]
    assert stream_outcomes(metric_reader) == {"interrupted": 1}
    with pytest.raises(ProviderError):  # a second one opens it: failures, both
        [c async for c in answer("p")]
    await guard.settle()
    assert guard.state == "open"


async def test_the_deadline_of_the_current_work_bounds_the_whole_stream(
    registry: BreakerRegistry, metric_reader: InMemoryMetricReader
) -> None:
    """Under toolkit.deadline, a stream still going when it passes ends with
    DeadlineExceeded after the chunks that made it in time; its generator is closed."""
    source = Source([str(i) for i in range(100)], pause=0.02)
    answer = toolkit.resilient(timeout=None)(source.stream)
    received: list[str] = []
    with toolkit.deadline(0.15), pytest.raises(DeadlineExceeded):
        await read(answer("p"), received)
    assert 2 <= len(received) < 100
    assert source.closed == 1
    assert stream_outcomes(metric_reader) == {"interrupted": 1}

    late = Source(["a"], first_pause=10)  # the deadline bounds the first chunk's timeout too
    slow = toolkit.resilient(timeout=30)(late.stream)
    with toolkit.deadline(0.05), pytest.raises(TimeoutError):
        [c async for c in slow("p")]


# --- the consumer stops early -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["break", "aclose", "cancel"])
async def test_a_consumer_that_stops_early_closes_the_stream_and_is_no_failure(
    registry: BreakerRegistry, metric_reader: InMemoryMetricReader, how: str
) -> None:
    """Leaving the loop, aclose(), or the consumer's task cancelled mid-stream: the provider's
    generator is closed at once (its finally ran), the breaker counts neither failure nor
    success, the stream's outcome is ``closed``."""
    source = Source([str(i) for i in range(1000)], pause=0.01)
    guard = breaker()
    answer = toolkit.resilient(breaker=guard, timeout=None)(source.stream)
    received: list[str] = []

    if how == "break":
        async for chunk in answer("p"):
            received.append(chunk)
            if len(received) == 3:
                break
    elif how == "aclose":
        stream = answer("p")
        received += [await anext(stream), await anext(stream)]  # type: ignore[arg-type]
        await stream.aclose()  # type: ignore[attr-defined]
    else:
        task = asyncio.create_task(read(answer("p"), received))
        await eventually(lambda: len(received) >= 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await eventually(lambda: source.closed == 1)
    assert source.finished == 0
    await guard.settle()
    assert outcomes(metric_reader) == {"ignored": 1}
    assert stream_outcomes(metric_reader) == {"closed": 1}
    assert guard.state == "closed"


async def test_a_streaming_response_whose_client_leaves_closes_the_resilient_stream(
    registry: BreakerRegistry, metric_reader: InMemoryMetricReader
) -> None:
    """Through a real ASGI app: a StreamingResponse over a @resilient stream whose client
    stops reading after the first chunks; the provider's generator is closed, no failure."""
    source = Source([f"{i}\n" for i in range(10_000)], pause=0.001)
    guard = breaker()
    answer = toolkit.resilient(breaker=guard, timeout=None)(source.stream)
    app = FastAPI()

    @app.get("/chat")
    async def chat() -> StreamingResponse:
        return StreamingResponse(answer("p"), media_type="text/plain")

    first = asyncio.Event()
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await first.wait()
        return {"type": "http.disconnect"}  # the client went away after the first chunk

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            first.set()

    await app(http_scope("/chat"), receive, send)
    await eventually(lambda: source.closed == 1)
    assert source.finished == 0
    await guard.settle()
    assert "failure" not in outcomes(metric_reader)


# --- the switch and the arguments ---------------------------------------------------------------


async def test_a_resilient_stream_with_the_flag_off_is_the_bare_stream() -> None:
    store = FlagStore()
    await store.set(RESILIENCE, "off", by="test")
    guard = breaker()
    await guard.force_open()
    source = Source(["a", "b"])
    answer = toolkit.resilient(breaker=guard, flags=store)(source.stream)
    assert [c async for c in answer("p")] == ["p:a", "p:b"]
    await store.set(RESILIENCE, "on", by="test")
    with pytest.raises(CircuitOpenError):
        [c async for c in answer("p")]


async def test_an_empty_stream_is_a_success(registry: BreakerRegistry) -> None:
    guard = breaker(minimum_calls=1)
    answer = toolkit.resilient(breaker=guard, timeout=None)(Source([]).stream)
    assert [c async for c in answer("p")] == []
    await guard.settle()
    assert guard.state == "closed"


@pytest.mark.redis
async def test_a_resilient_streams_breaker_is_shared_through_the_backend(backend: Backend) -> None:
    """Interrupted streams on one instance open the breaker another instance uses."""
    name = f"s-{uuid.uuid4().hex[:6]}"
    here = CircuitBreaker(name, backend=backend, minimum_calls=2, failure_rate=0.5)
    there = CircuitBreaker(name, backend=backend, minimum_calls=2, failure_rate=0.5)
    answer = toolkit.resilient(breaker=here, timeout=None)(Source(["a", "b"], fail_after=1).stream)
    for _ in range(2):
        with pytest.raises(ProviderError):
            [c async for c in answer("p")]
    await here.settle()
    assert here.state == "open"
    await there.refresh()
    assert there.state == "open"


def test_resilient_refuses_what_cannot_stream_or_answer_for_a_stream() -> None:
    def sync_chunks() -> Any:
        yield "a"

    async def chunks() -> AsyncIterator[str]:
        yield "a"

    async def one() -> str:
        return "a"

    with pytest.raises(ConfigurationError, match="is a sync generator function; make it async"):
        toolkit.resilient()(sync_chunks)
    with pytest.raises(ConfigurationError, match="its fallback is an async function"):
        toolkit.resilient(fallback=chunks)(one)
    with pytest.raises(ConfigurationError, match=r"stream, an async generator function\) \(a sync"):
        toolkit.resilient(fallback=sync_chunks)  # type: ignore[arg-type]


async def test_a_stream_cancelled_before_its_first_chunk_is_no_failure_and_frees_the_probe(
    registry: BreakerRegistry, metric_reader: InMemoryMetricReader
) -> None:
    """The consumer is cancelled while the stream waits for its first chunk (or backs off
    before a retry): its generator is closed, the breaker counts it ``ignored`` (a probe's
    permit is given back on this path too: the coroutines' code, tested there)."""
    source = Source(["a"], first_pause=3600)
    guard = breaker(minimum_calls=1)
    answer = toolkit.resilient(breaker=guard, retries=retrying(), timeout=None)(source.stream)
    task = asyncio.create_task(read(answer("p"), []))
    await eventually(lambda: source.attempts == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.closed == 1
    await guard.settle()
    assert outcomes(metric_reader) == {"ignored": 1}
    assert stream_outcomes(metric_reader) == {"closed": 1}
