"""The agent layer's histogram points, handed to the SDK in batches: every point reaches every
reader by its next collection, once, with the trace it was recorded in; the queue stays
bounded without any collection; a failing record never reaches the application."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import toolkit
from tests.support.otel import points
from toolkit.agents import AgentTelemetry, set_current_agent_telemetry
from toolkit.settings import AgentSettings
from toolkit.telemetry import names
from toolkit.telemetry.batched import BATCH, BatchedRecords

STEP = names.STEP_DURATION_METRIC.name


@pytest.fixture
def readers() -> Iterator[tuple[InMemoryMetricReader, InMemoryMetricReader, AgentTelemetry]]:
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    telemetry = AgentTelemetry(
        AgentSettings(),
        tracer_provider=TracerProvider(),
        meter_provider=MeterProvider(metric_readers=[first, second]),
    )
    set_current_agent_telemetry(telemetry)
    yield first, second, telemetry
    set_current_agent_telemetry(None)


def step_count(reader: InMemoryMetricReader) -> int:
    return sum(point.count for point in points(reader, STEP))


def test_every_point_reaches_each_reader_at_its_next_collection_once(
    readers: tuple[InMemoryMetricReader, InMemoryMetricReader, AgentTelemetry],
) -> None:
    """One step (far from a full batch) is in the first collection of each of two readers;
    the points of a call are too (duration, both token points); none is counted twice."""
    first, second, telemetry = readers
    with toolkit.step("rerank"):
        pass
    assert len(telemetry.records) == 1  # queued, not recorded yet
    assert step_count(first) == 1
    with toolkit.llm_call("gpt-4o", provider="openai") as call:
        call.usage(input_tokens=7, output_tokens=3)
    assert step_count(second) == 1
    tokens = {
        point.attributes[names.GEN_AI_TOKEN_TYPE]: point.sum
        for point in points(second, names.GEN_AI_CLIENT_TOKEN_USAGE_METRIC.name)
    }
    assert tokens == {names.GEN_AI_TOKEN_INPUT: 7, names.GEN_AI_TOKEN_OUTPUT: 3}
    assert step_count(first) == 1  # cumulative: still one, not two
    assert len(telemetry.records) == 0


def test_the_queue_stays_bounded_without_any_collection(
    readers: tuple[InMemoryMetricReader, InMemoryMetricReader, AgentTelemetry],
) -> None:
    first, _, telemetry = readers
    rerank = toolkit.step("rerank")
    for _ in range(10 * BATCH + 5):
        with rerank:
            pass
        assert len(telemetry.records) < BATCH
    assert step_count(first) == 10 * BATCH + 5


def test_an_exemplar_names_the_trace_the_point_was_recorded_in(
    readers: tuple[InMemoryMetricReader, InMemoryMetricReader, AgentTelemetry],
) -> None:
    """The point is handed to the SDK later, inside another request's trace: its exemplar
    still names the request the step ran in."""
    first, _, telemetry = readers
    tracer = telemetry.tracer
    with tracer.start_as_current_span("GET /ask") as request, toolkit.step("rerank"):
        pass
    with tracer.start_as_current_span("GET /other"):
        telemetry.records.flush()
    [point] = points(first, STEP)
    assert [e.trace_id for e in point.exemplars] == [request.get_span_context().trace_id]


class Refusing:
    """A histogram whose SDK refuses every point."""

    def __init__(self) -> None:
        self.calls = 0

    def record(self, *args: object) -> None:
        self.calls += 1
        raise RuntimeError("exporter broke")


def test_a_point_the_sdk_refuses_is_logged_once_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = BatchedRecords(batch=4)
    refusing = Refusing()
    with caplog.at_level(logging.ERROR, logger="toolkit.telemetry"):
        for _ in range(10):
            records.record(refusing, 1.0, {}, None)  # type: ignore[arg-type]
        records.flush()
    assert refusing.calls == 10
    assert len(records) == 0
    assert len([r for r in caplog.records if "histogram point" in r.message]) == 1
