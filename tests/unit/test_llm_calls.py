"""``toolkit.llm_call``: CLIENT spans and GenAI metrics of model calls, recorded when the call
or the stream handed to the caller ends (exhausted, failed, closed early or dropped), never
at the headers; bounded model labels, content only when opted in and then cut, cost from the
price table, install() wiring, and what a cache hit spared."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace import get_current_span as trace_current

import toolkit
from tests.support.otel import counter_value, points
from toolkit._savings import Tally
from toolkit.agents import AgentTelemetry, current_agent_telemetry, set_current_agent_telemetry
from toolkit.cache._saved import MAGIC, with_saved, without_saved
from toolkit.settings import AgentSettings
from toolkit.telemetry import names

PRICES = {"gpt-4o": {"input": 2.5, "output": 10.0, "cache_read": 1.25}}


def telemetry_with(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, **options: object
) -> AgentTelemetry:
    telemetry = AgentTelemetry(
        AgentSettings.model_validate({"prices": PRICES, **options}),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        environ={},
    )
    set_current_agent_telemetry(telemetry)
    return telemetry


@pytest.fixture
def agents(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> AgentTelemetry:
    return telemetry_with(tracer_provider, meter_provider)


def only(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


# --- a call answered at once ------------------------------------------------------------------


@pytest.mark.usefixtures("agents")
def test_a_chat_call_is_a_client_span_with_the_conventions_attributes_and_its_cost(
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    with toolkit.llm_call("gpt-4o", provider="openai") as call:
        call.response(model="gpt-4o", finish_reasons=["stop"], response_id="chatcmpl-1")
        call.usage(input_tokens=1000, output_tokens=200, cache_read_input_tokens=400)
    span = only(span_exporter)
    assert span.name == "chat gpt-4o"
    assert span.kind is SpanKind.CLIENT
    cost = (600 * 2.5 + 400 * 1.25 + 200 * 10.0) / 1_000_000
    assert dict(span.attributes) == {
        names.GEN_AI_OPERATION_NAME: "chat",
        names.GEN_AI_PROVIDER_NAME: "openai",
        names.GEN_AI_REQUEST_MODEL: "gpt-4o",
        names.GEN_AI_RESPONSE_MODEL: "gpt-4o",
        names.GEN_AI_RESPONSE_ID: "chatcmpl-1",
        names.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
        names.GEN_AI_USAGE_INPUT_TOKENS: 1000,
        names.GEN_AI_USAGE_OUTPUT_TOKENS: 200,
        names.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 400,
        names.GEN_AI_COST_ATTRIBUTE: pytest.approx(cost),
    }
    (duration,) = points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)
    assert duration.explicit_bounds == names.GEN_AI_DURATION_BUCKETS
    assert dict(duration.attributes) == {
        names.GEN_AI_OPERATION_NAME: "chat",
        names.GEN_AI_PROVIDER_NAME: "openai",
        names.GEN_AI_REQUEST_MODEL: "gpt-4o",
        names.GEN_AI_RESPONSE_MODEL: "gpt-4o",
    }
    tokens = {
        p.attributes[names.GEN_AI_TOKEN_TYPE]: (p.sum, p.explicit_bounds)
        for p in points(metric_reader, names.GEN_AI_CLIENT_TOKEN_USAGE)
    }
    assert tokens == {
        "input": (1000, names.GEN_AI_TOKEN_BUCKETS),
        "output": (200, names.GEN_AI_TOKEN_BUCKETS),
    }
    assert counter_value(metric_reader, names.GEN_AI_COST) == pytest.approx(cost)
    assert not points(metric_reader, names.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK)


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_an_embeddings_call_that_fails_is_marked_and_counted_with_its_error_type(
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    with pytest.raises(ConnectionError):
        async with toolkit.llm_call("text-embed", provider="openai", operation="embeddings"):
            raise ConnectionError("refused")
    span = only(span_exporter)
    assert span.name == "embeddings text-embed"
    assert span.attributes[names.ERROR_TYPE] == "connection"
    assert span.status.status_code is StatusCode.ERROR
    (duration,) = points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)
    assert duration.attributes[names.ERROR_TYPE] == "connection"
    assert duration.attributes[names.GEN_AI_OPERATION_NAME] == "embeddings"


@pytest.mark.usefixtures("agents")
def test_an_unpriced_model_costs_nothing_and_raises_nothing(
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    with toolkit.llm_call("local-llama", provider="ollama") as call:
        call.usage(input_tokens=10, output_tokens=10)
    assert names.GEN_AI_COST_ATTRIBUTE not in only(span_exporter).attributes
    assert not points(metric_reader, names.GEN_AI_COST)


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_tokens_and_cost_count_under_the_agent_the_call_ran_in(
    metric_reader: InMemoryMetricReader,
) -> None:
    @toolkit.traced_agent("support")
    async def answer() -> None:
        with toolkit.llm_call("gpt-4o", provider="openai") as call:
            call.usage(input_tokens=1_000_000, output_tokens=0)

    await answer()
    with toolkit.llm_call("gpt-4o", provider="openai") as call:  # outside any agent
        call.usage(input_tokens=1_000_000, output_tokens=0)
    assert counter_value(metric_reader, names.GEN_AI_COST, gen_ai__agent__name="support") == 2.5
    agents = {
        p.attributes.get(names.GEN_AI_AGENT_NAME)
        for p in points(metric_reader, names.GEN_AI_CLIENT_TOKEN_USAGE)
    }
    assert agents == {"support", None}


# --- a span a framework opened; the server ---------------------------------------------------


@pytest.mark.usefixtures("agents")
def test_a_call_onto_a_framework_span_records_onto_it_and_leaves_its_end_and_status_alone(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    tracer = tracer_provider.get_tracer("framework")
    with tracer.start_as_current_span("chat gpt-4o") as framework:
        with (  # a first attempt, which a retry makes good
            pytest.raises(ConnectionError),
            toolkit.llm_call("gpt-4o", provider="openai", span=framework),
        ):
            raise ConnectionError("refused")
        with toolkit.llm_call("gpt-4o", provider="openai", span=framework) as call:
            assert trace_current() is framework
            call.usage(input_tokens=1_000_000, output_tokens=0)
        assert framework.is_recording()  # still the framework's to end
    span = only(span_exporter)  # no second span
    assert span.name == "chat gpt-4o"
    assert span.status.status_code is StatusCode.UNSET
    assert names.ERROR_TYPE not in span.attributes
    assert span.attributes[names.GEN_AI_USAGE_INPUT_TOKENS] == 1_000_000
    assert span.attributes[names.GEN_AI_COST_ATTRIBUTE] == 2.5
    durations = points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)
    assert sorted(p.attributes.get(names.ERROR_TYPE, "") for p in durations) == ["", "connection"]
    assert counter_value(metric_reader, names.GEN_AI_COST) == 2.5


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_the_agent_of_a_call_is_the_running_one_unless_named_or_none(
    metric_reader: InMemoryMetricReader,
) -> None:
    @toolkit.traced_agent("support")
    async def answer() -> None:
        for agent in (toolkit.DEFAULT, "triage", None):
            with toolkit.llm_call("gpt-4o", provider="openai", agent=agent) as call:
                call.usage(input_tokens=1_000_000, output_tokens=0)

    await answer()
    for agent in ("support", "triage"):
        assert counter_value(metric_reader, names.GEN_AI_COST, gen_ai__agent__name=agent) == 2.5
    assert counter_value(metric_reader, names.GEN_AI_COST) == 7.5


def test_the_server_is_on_the_span_and_the_metrics_and_its_addresses_are_bounded(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    telemetry_with(tracer_provider, meter_provider, max_label_values=2)
    for address in ("api.openai.com", "localhost", "third.example", "fourth.example"):
        with toolkit.llm_call(
            "gpt-4o", provider="openai", server_address=address, server_port=8443
        ) as call:
            call.usage(input_tokens=3, output_tokens=1)
    with toolkit.llm_call("gpt-4o", provider="openai", server_port=70000) as call:  # no port
        call.usage(input_tokens=3, output_tokens=1)
    spans = span_exporter.get_finished_spans()
    assert [s.attributes.get(names.SERVER_ADDRESS) for s in spans] == [
        "api.openai.com",
        "localhost",
        "third.example",
        "fourth.example",
        None,
    ]
    assert [s.attributes.get(names.SERVER_PORT) for s in spans] == [8443] * 4 + [None]
    for metric in (names.GEN_AI_CLIENT_OPERATION_DURATION, names.GEN_AI_CLIENT_TOKEN_USAGE):
        servers = {
            (p.attributes.get(names.SERVER_ADDRESS), p.attributes.get(names.SERVER_PORT))
            for p in points(metric_reader, metric)
        }
        assert servers == {
            ("api.openai.com", 8443),
            ("localhost", 8443),
            (names.GEN_AI_OTHER, None),  # past the bound, and no series per port either
            (None, None),
        }


@pytest.mark.usefixtures("agents")
def test_a_first_chunk_stamped_by_the_stream_itself_is_recorded_from_the_start_of_the_call(
    metric_reader: InMemoryMetricReader,
) -> None:
    with toolkit.llm_call("gpt-4o", provider="openai", stream=True) as call:
        call.first_chunk(after=0.25)
        call.first_chunk()  # the first one noted stays
    (first,) = points(metric_reader, names.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK)
    assert first.sum == pytest.approx(0.25)


# --- streams ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("agents")
def test_a_sync_stream_records_when_exhausted_never_at_the_headers(
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    def chunks() -> Iterator[dict[str, int]]:
        yield {"text": 1}
        yield {"text": 2, "output_tokens": 7}

    def read(chunk: dict[str, int]) -> None:
        if "output_tokens" in chunk:
            call.usage(input_tokens=3, output_tokens=chunk["output_tokens"])

    with toolkit.llm_call("gpt-4o", provider="openai", stream=True) as call:
        stream = call.stream(chunks(), on_chunk=read)
    assert span_exporter.get_finished_spans() == ()  # the block ended, the stream has not
    assert not points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)
    assert next(stream) == {"text": 1}
    assert span_exporter.get_finished_spans() == ()
    assert list(stream) == [{"text": 2, "output_tokens": 7}]
    span = only(span_exporter)
    assert span.attributes[names.GEN_AI_REQUEST_STREAM] is True
    assert span.attributes[names.GEN_AI_USAGE_OUTPUT_TOKENS] == 7
    first = span.attributes[names.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    (ttfc,) = points(metric_reader, names.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK)
    assert ttfc.sum == pytest.approx(first)
    assert ttfc.explicit_bounds == names.GEN_AI_DURATION_BUCKETS
    (duration,) = points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)
    assert duration.sum >= first


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_an_async_stream_closed_early_ends_the_call_and_closes_the_provider_stream(
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    closed = []

    async def chunks() -> AsyncIterator[str]:
        try:
            for word in ["a", "b", "c"]:
                yield word
        finally:
            closed.append(True)

    async with toolkit.llm_call("gpt-4o", provider="openai") as call:
        stream = call.stream(chunks())
    async with stream:
        async for word in stream:
            assert word == "a"
            break
    assert closed == [True]
    span = only(span_exporter)
    assert names.ERROR_TYPE not in span.attributes
    assert len(points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)) == 1


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_a_stream_that_fails_midway_marks_the_call_with_the_error(
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    async def chunks() -> AsyncIterator[str]:
        yield "a"
        raise TimeoutError("stalled")

    async with toolkit.llm_call("gpt-4o", provider="openai") as call:
        stream = call.stream(chunks())
    with pytest.raises(TimeoutError):
        async for _ in stream:
            pass
    assert only(span_exporter).attributes[names.ERROR_TYPE] == "timeout"
    (duration,) = points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)
    assert duration.attributes[names.ERROR_TYPE] == "timeout"


@pytest.mark.usefixtures("agents")
def test_a_stream_dropped_by_its_caller_still_ends_its_span(
    span_exporter: InMemorySpanExporter,
) -> None:
    with toolkit.llm_call("gpt-4o", provider="openai") as call:
        stream = call.stream(iter(["a", "b"]))
    next(stream)
    del stream, call
    gc.collect()
    assert only(span_exporter).name == "chat gpt-4o"


@pytest.mark.usefixtures("agents")
def test_the_stream_hands_other_attributes_to_the_provider_stream_and_its_span_is_current(
    span_exporter: InMemorySpanExporter, tracer_provider: TracerProvider
) -> None:
    tracer = tracer_provider.get_tracer("test")

    class ProviderStream:
        response = "the raw response"

        def __iter__(self) -> Iterator[int]:
            with tracer.start_as_current_span("chunk"):
                yield 1

    with toolkit.llm_call("gpt-4o", provider="openai") as call:
        stream = call.stream(ProviderStream())
    assert stream.response == "the raw response"
    assert list(stream) == [1]
    (chunk,) = [s for s in span_exporter.get_finished_spans() if s.name == "chunk"]
    (llm,) = [s for s in span_exporter.get_finished_spans() if s.name == "chat gpt-4o"]
    assert chunk.parent.span_id == llm.context.span_id


@pytest.mark.usefixtures("agents")
def test_each_chunk_is_made_under_the_calls_span_in_whatever_context_the_reader_is_in(
    span_exporter: InMemorySpanExporter, tracer_provider: TracerProvider
) -> None:
    """The reader changes its context between two chunks (it opens a span): each chunk is
    still produced under the call's span, and the reader's span is current again after."""
    tracer = tracer_provider.get_tracer("test")
    seen = []

    def provider_stream() -> Iterator[int]:
        for i in range(3):
            seen.append(trace_current())
            yield i

    with toolkit.llm_call("gpt-4o", provider="openai") as call:
        stream = call.stream(provider_stream())
    assert next(stream) == 0
    with tracer.start_as_current_span("reader") as reader:
        assert next(stream) == 1
        assert trace_current() is reader
    assert list(stream) == [2]
    (llm,) = [s for s in span_exporter.get_finished_spans() if s.name == "chat gpt-4o"]
    assert {span.get_span_context().span_id for span in seen} == {llm.context.span_id}


@pytest.mark.usefixtures("agents")
def test_an_ended_call_is_freed_at_once_leaving_no_cycle_for_the_collector() -> None:
    """The context a call makes current holds the call: it lets go of it when it ends, so a
    call, its span and its context never wait for the cycle collector."""
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            with toolkit.llm_call("gpt-4o", provider="openai") as call:
                call.usage(input_tokens=1, output_tokens=1)
            with toolkit.llm_call("gpt-4o", provider="openai") as call:
                stream = call.stream(iter([1, 2]))
            assert list(stream) == [1, 2]
        assert gc.collect() == 0
    finally:
        gc.enable()


@pytest.mark.usefixtures("agents")
def test_a_call_inside_a_framework_span_call_fills_it_and_is_counted_once(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    """The outer call records onto a framework's span; a call of the same operation inside
    it opens no span of its own, and its usage and cost count once, on the framework's."""
    tracer = tracer_provider.get_tracer("framework")
    with (
        tracer.start_as_current_span("chat gpt-4o") as framework,
        toolkit.llm_call("gpt-4o", provider="openai", span=framework),
        toolkit.llm_call("gpt-4o", provider="openai") as inner,
    ):
        assert inner.recording
        assert trace_current() is framework
        inner.usage(input_tokens=1_000_000, output_tokens=0)
    span = only(span_exporter)
    assert span.attributes[names.GEN_AI_USAGE_INPUT_TOKENS] == 1_000_000
    assert len(points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)) == 1
    assert counter_value(metric_reader, names.GEN_AI_COST) == 2.5


@pytest.mark.usefixtures("agents")
def test_a_call_inside_one_that_already_ended_records_nothing(
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    """The app's call ended before the stream made inside it did (it returned the stream
    without handing it over): that stream's end adds no span and no point."""
    with (
        toolkit.llm_call("gpt-4o", provider="openai") as outer,
        toolkit.llm_call("gpt-4o", provider="openai") as inner,
    ):
        stream = inner.stream(iter([1, 2]))
    assert not outer.recording
    inner.usage(output_tokens=5)
    assert list(stream) == [1, 2]
    assert names.GEN_AI_USAGE_OUTPUT_TOKENS not in only(span_exporter).attributes
    assert len(points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)) == 1


@pytest.mark.usefixtures("agents")
def test_an_on_chunk_hook_that_raises_is_logged_and_the_stream_goes_on(
    span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(chunk: int) -> None:
        raise ValueError("bad hook")

    with toolkit.llm_call("gpt-4o", provider="openai") as call:
        stream = call.stream([1, 2], on_chunk=broken)
    assert list(stream) == [1, 2]
    assert "on_chunk raised" in caplog.text
    assert len(span_exporter.get_finished_spans()) == 1


# --- bounded labels ---------------------------------------------------------------------------


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(models=st.lists(st.text(min_size=1, max_size=300), max_size=10))
def test_model_labels_keep_the_first_models_and_every_later_one_is_other(
    tracer_provider: TracerProvider, models: list[str]
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry_with(tracer_provider, provider, max_label_values=4)
    for model in models:
        with toolkit.llm_call(model, provider="openai"):
            pass
    labels = {
        p.attributes[names.GEN_AI_REQUEST_MODEL]
        for p in points(reader, names.GEN_AI_CLIENT_OPERATION_DURATION)
    }
    distinct = list(dict.fromkeys(model[:128] for model in models))
    assert labels <= {*distinct[:4], names.GEN_AI_OTHER}
    assert (names.GEN_AI_OTHER in labels) == (len(distinct) > 4)
    provider.shutdown()


# --- content ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("agents")
def test_prompts_and_completions_are_never_recorded_by_default(
    span_exporter: InMemorySpanExporter,
) -> None:
    with toolkit.llm_call("gpt-4o", provider="openai") as call:
        assert not call.capture_content
        call.input_messages("a secret prompt")
        call.output_messages("a secret answer")
    attributes = only(span_exporter).attributes
    assert names.GEN_AI_INPUT_MESSAGES not in attributes
    assert names.GEN_AI_OUTPUT_MESSAGES not in attributes


@pytest.mark.parametrize(
    ("value", "captured"),
    [("SPAN_ONLY", True), ("true", True), ("span_and_event", True), ("NO_CONTENT", False),
     ("EVENT_ONLY", False), ("false", False), ("yes please", False)],
)  # fmt: skip
def test_the_opentelemetry_variable_opts_in_and_the_setting_decides_over_it(
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    value: str,
    captured: bool,
) -> None:
    environ = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value}
    by_variable = AgentTelemetry(tracer_provider=tracer_provider, environ=environ)
    assert by_variable.capture_content is captured
    setting = AgentSettings(capture_content=not captured)
    assert AgentTelemetry(setting, environ=environ).capture_content is not captured


def test_captured_messages_are_the_conventions_json_cut_to_the_configured_size(
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    telemetry_with(
        tracer_provider,
        meter_provider,
        capture_content=True,
        content_max_length=5,
        content_max_messages=2,
    )
    with toolkit.llm_call("gpt-4o", provider="openai") as call:
        call.input_messages(
            [
                {"role": "system", "content": "dropped: only the last two are kept"},
                {"role": "user", "content": "a long question"},
                {"role": "user", "parts": [{"type": "text", "content": "second part"}]},
            ]
        )
        call.output_messages("the whole answer")
    attributes = only(span_exporter).attributes
    assert json.loads(attributes[names.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "a lon"}]},
        {"role": "user", "parts": [{"type": "text", "content": "secon"}]},
    ]
    assert json.loads(attributes[names.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "the w"}]}
    ]


# --- install() --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_install_makes_the_agent_telemetry_of_its_settings_and_providers(
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    app = FastAPI()

    @toolkit.traced_agent("routed")
    async def agent() -> str:
        with toolkit.llm_call("gpt-4o", provider="openai") as call:
            call.usage(input_tokens=1_000_000, output_tokens=0)
        return "ok"

    @app.get("/ask")
    async def ask() -> str:
        return await agent()

    installed = toolkit.install(
        app,
        toolkit.ToolkitSettings(agents={"prices": PRICES}),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    assert current_agent_telemetry().prices
    await installed.startup()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/ask")).json() == "ok"
    await installed.shutdown()
    spans = {span.name: span for span in span_exporter.get_finished_spans()}
    assert spans["invoke_agent routed"].parent.span_id == spans["GET /ask"].context.span_id
    assert spans["chat gpt-4o"].parent.span_id == spans["invoke_agent routed"].context.span_id
    assert counter_value(metric_reader, names.GEN_AI_COST, gen_ai__agent__name="routed") == 2.5


# --- what a cache hit spared ------------------------------------------------------------------


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_a_cache_hit_counts_the_model_calls_and_tokens_its_entry_cost(
    metric_reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    toolkit.cache.set_current_cache(
        toolkit.cache.CacheStore(toolkit.backends.MemoryBackend(), meter_provider=meter_provider)
    )
    runs = []

    @toolkit.cached(ttl="1m", namespace="answers")
    async def answer(question: str) -> str:
        runs.append(question)
        for model in ("gpt-4o", "text-embed"):
            with toolkit.llm_call(model, provider="openai") as call:
                call.usage(input_tokens=100, output_tokens=10)
        return question.upper()

    @toolkit.cached(ttl="1m", namespace="sync")
    def plain(question: str) -> str:
        with toolkit.llm_call("gpt-4o", provider="openai") as call:
            call.usage(input_tokens=5, output_tokens=1)
        return question

    for _ in range(3):
        assert await answer("why") == "WHY"
        assert plain("why") == "why"
    assert runs == ["why"]

    def saved(metric: str, **attributes: str) -> float:
        return counter_value(metric_reader, metric, **attributes)

    calls = names.CACHE_SAVED_CALLS
    tokens = names.CACHE_SAVED_TOKENS
    assert saved(calls, toolkit__cache__name="answers", gen_ai__request__model="gpt-4o") == 2
    assert saved(calls, toolkit__cache__name="answers", gen_ai__request__model="text-embed") == 2
    assert saved(tokens, toolkit__cache__name="answers", gen_ai__token__type="input") == 400
    assert saved(tokens, toolkit__cache__name="answers", gen_ai__token__type="output") == 40
    assert saved(tokens, toolkit__cache__name="sync", gen_ai__token__type="input") == 10


@pytest.mark.anyio
async def test_an_entry_stored_without_savings_is_read_as_before_and_saves_nothing(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    store = toolkit.cache.CacheStore(
        toolkit.backends.MemoryBackend(), meter_provider=meter_provider
    )
    toolkit.cache.set_current_cache(store)

    @toolkit.cached(ttl="1m", namespace="old")
    async def answer(question: str) -> str:
        return question  # no model call: stored exactly as before the savings existed

    await answer("q")
    (key,) = stored_keys(store)
    assert await store.get(key) == b'"q"'
    assert await answer("q") == "q"
    assert not points(metric_reader, names.CACHE_SAVED_CALLS)


def stored_keys(store: toolkit.cache.CacheStore) -> list[str]:
    """The keys in a memory backend's table (its private entries: no operation lists them)."""
    backend = store.backend
    table = backend.cache  # type: ignore[attr-defined]
    return [key.removeprefix(backend.key_prefix) for key in list(table._entries)]


@settings(max_examples=60)
@given(value=st.binary(max_size=64), models=st.lists(st.text(max_size=20), max_size=6))
def test_the_savings_trailer_round_trips_and_a_value_without_it_is_left_whole(
    value: bytes, models: list[str]
) -> None:
    tally = Tally()
    for model in models:
        tally.add(model, 1, 10, 2)
    raw, read = without_saved(with_saved(value, tally))
    assert raw == value
    assert (read.models if read else {}) == tally.models
    assert without_saved(value) == (value, None) or value.endswith(MAGIC)
