"""Cost per request of the status board: what each request pays for the status page's
percentiles and kept traces; run with ``pytest --benchmark-only
--benchmark-timer=time.process_time`` (as ``make bench`` does: CPU time, threads included).

Read each against its anchor in the same run: ``test_telemetry_middleware_without_status``
(the middleware with a recording span, no board) against ``..._with_status`` (the board's
percentiles and its trace buffer and agent figures on the same provider); the two lower
ones isolate the board's parts. Batches of ``BATCH`` requests, as in test_micro.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from pytest_benchmark.fixture import BenchmarkFixture

from tests.benchmarks.apps import discarding_tracer_provider
from tests.benchmarks.test_micro import (
    BATCH,
    _requests,
    batch_of,
    inner_app,
    loop,  # noqa: F401 - the fixture
)
from toolkit import TelemetryMiddleware
from toolkit.telemetry.status import StatusBoard


@pytest.fixture
def traced_board() -> Iterator[tuple[TracerProvider, StatusBoard]]:
    """A provider whose spans are batched then discarded, with a board's processors on it."""
    provider = discarding_tracer_provider()
    board = StatusBoard()
    for processor in board.span_processors:
        provider.add_span_processor(processor)
    yield provider, board
    provider.shutdown()


def test_telemetry_middleware_without_status(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811 - the fixture
    meter_provider: MeterProvider,
) -> None:
    """The anchor: a recorded SERVER span (batched, discarded) and the HTTP metrics."""
    provider = discarding_tracer_provider()
    app = TelemetryMiddleware(inner_app, tracer_provider=provider, meter_provider=meter_provider)
    benchmark(batch_of(loop, _requests(app)))
    provider.shutdown()


def test_telemetry_middleware_with_status(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,  # noqa: F811 - the fixture
    meter_provider: MeterProvider,
    traced_board: tuple[TracerProvider, StatusBoard],
) -> None:
    """The same, plus the route's percentiles, the tail-sampling buffer and the agent figures:
    the difference is the status page's cost per request."""
    provider, board = traced_board
    app = TelemetryMiddleware(
        inner_app, tracer_provider=provider, meter_provider=meter_provider, status=board
    )
    benchmark(batch_of(loop, _requests(app)))
    assert board.requests.summaries()


def test_status_percentiles_alone(benchmark: BenchmarkFixture) -> None:
    """The request path's one call into the board: a logarithm and a few dict updates."""
    board = StatusBoard()

    def batch() -> None:
        for i in range(BATCH):
            board.record_request("GET", "/chat/{session}", 0.001 + i * 1e-6, False)

    benchmark(batch)


def test_trace_buffer_alone(
    benchmark: BenchmarkFixture, traced_board: tuple[TracerProvider, StatusBoard]
) -> None:
    """A request's trace of three spans through the buffer, most of them not kept (the
    steady state: only the slowest per route and the failures are)."""
    provider, _ = traced_board
    tracer = provider.get_tracer("bench")

    def batch() -> None:
        for _ in range(BATCH):
            with (
                tracer.start_as_current_span("GET /chat", kind=SpanKind.SERVER),
                tracer.start_as_current_span("invoke_agent support"),
                tracer.start_as_current_span("chat gpt-4o"),
            ):
                pass

    benchmark(batch)
