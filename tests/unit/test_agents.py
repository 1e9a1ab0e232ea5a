"""``@traced_agent`` and ``toolkit.step``: spans of every kind of function, ended when the run
ends (for a generator: exhausted, failed or closed, never at its first yield), the
conversation id from the arguments, bounded labels, the kill switch, and every toolkit
decision made inside an agent landing on its span."""

from __future__ import annotations

import gc
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import toolkit
from tests.support.otel import points
from toolkit.agents import AgentTelemetry, set_current_agent_telemetry
from toolkit.agents._conversation import MAX_CONVERSATION_ID
from toolkit.errors import ConfigurationError
from toolkit.settings import AgentSettings
from toolkit.telemetry import names


@pytest.fixture
def agents(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> AgentTelemetry:
    telemetry = AgentTelemetry(
        AgentSettings(max_label_values=3),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    set_current_agent_telemetry(telemetry)
    return telemetry


def finished(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    spans = finished(exporter, name)
    assert len(spans) == 1, [span.name for span in exporter.get_finished_spans()]
    return spans[0]


# --- every kind of function -------------------------------------------------------------------


@pytest.mark.usefixtures("agents")
def test_a_sync_agent_is_an_internal_invoke_agent_span_with_its_name(
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    @toolkit.traced_agent("support")
    def answer(question: str) -> str:
        return question.upper()

    assert answer("hi") == "HI"
    span = only(span_exporter, "invoke_agent support")
    assert span.kind is SpanKind.INTERNAL
    assert span.attributes == {
        names.GEN_AI_OPERATION_NAME: "invoke_agent",
        names.GEN_AI_AGENT_NAME: "support",
    }
    (point,) = points(metric_reader, names.AGENT_DURATION)
    assert dict(point.attributes) == {names.GEN_AI_AGENT_NAME: "support"}
    assert point.count == 1
    assert point.explicit_bounds == names.AGENT_DURATION_BUCKETS


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_an_async_agent_that_fails_marks_its_span_and_duration_with_the_error_type(
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    @toolkit.traced_agent("support")
    async def answer() -> str:
        raise TimeoutError("model too slow")

    with pytest.raises(TimeoutError):
        await answer()
    span = only(span_exporter, "invoke_agent support")
    assert span.attributes[names.ERROR_TYPE] == "timeout"
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    (point,) = points(metric_reader, names.AGENT_DURATION)
    assert point.attributes[names.ERROR_TYPE] == "timeout"


@pytest.mark.usefixtures("agents")
def test_a_generator_agent_ends_its_span_when_exhausted_not_at_its_first_yield(
    span_exporter: InMemorySpanExporter,
) -> None:
    @toolkit.traced_agent("streamer")
    def answer() -> Iterator[str]:
        yield "a"
        yield "b"
        return None

    stream = answer()
    assert next(stream) == "a"
    assert not finished(span_exporter, "invoke_agent streamer")
    assert list(stream) == ["b"]
    assert only(span_exporter, "invoke_agent streamer").status.status_code is StatusCode.UNSET


@pytest.mark.usefixtures("agents")
def test_a_generator_agent_closed_early_or_dropped_ends_its_span_without_an_error(
    span_exporter: InMemorySpanExporter,
) -> None:
    closed_inside = []

    @toolkit.traced_agent("streamer")
    def answer() -> Iterator[int]:
        try:
            yield from range(10)
        finally:
            closed_inside.append(True)

    stream = answer()
    next(stream)
    stream.close()
    dropped = answer()
    next(dropped)
    del dropped
    gc.collect()
    spans = finished(span_exporter, "invoke_agent streamer")
    assert len(spans) == 2
    assert closed_inside == [True, True]
    assert all(names.ERROR_TYPE not in span.attributes for span in spans)


@pytest.mark.usefixtures("agents")
def test_a_generator_agent_passes_sent_and_thrown_values_and_its_return_value(
    span_exporter: InMemorySpanExporter,
) -> None:
    @toolkit.traced_agent("echo")
    def echo() -> Any:
        received = yield "ready"
        try:
            yield f"got {received}"
        except KeyError:
            yield "caught"
        return "done"

    stream = echo()
    assert next(stream) == "ready"
    assert stream.send("x") == "got x"
    assert stream.throw(KeyError("k")) == "caught"
    with pytest.raises(StopIteration) as stop:
        next(stream)
    assert stop.value.value == "done"
    assert names.ERROR_TYPE not in only(span_exporter, "invoke_agent echo").attributes


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_an_async_generator_agent_spans_its_whole_stream_and_fails_with_it(
    span_exporter: InMemorySpanExporter,
) -> None:
    @toolkit.traced_agent("streamer")
    async def answer(fail: bool) -> AsyncIterator[str]:
        yield "a"
        if fail:
            raise RuntimeError("stream broke")
        yield "b"

    assert [chunk async for chunk in answer(False)] == ["a", "b"]
    stream = answer(True)
    assert await anext(stream) == "a"
    assert len(finished(span_exporter, "invoke_agent streamer")) == 1
    with pytest.raises(RuntimeError):
        await anext(stream)
    failed = finished(span_exporter, "invoke_agent streamer")[-1]
    assert failed.attributes[names.ERROR_TYPE] == "RuntimeError"


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_an_async_generator_agent_closed_early_ends_its_span_and_closes_the_inner_one(
    span_exporter: InMemorySpanExporter,
) -> None:
    closed = []

    @toolkit.traced_agent("streamer")
    async def answer() -> AsyncIterator[int]:
        try:
            for i in range(10):
                yield i
        finally:
            closed.append(True)

    stream = answer()
    await anext(stream)
    await stream.aclose()
    assert closed == [True]
    assert names.ERROR_TYPE not in only(span_exporter, "invoke_agent streamer").attributes


@pytest.mark.usefixtures("agents")
def test_the_agent_span_is_current_only_while_the_generator_runs(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    tracer = tracer_provider.get_tracer("test")

    @toolkit.traced_agent("streamer")
    def answer() -> Iterator[int]:
        with tracer.start_as_current_span("inside"):
            pass
        yield 1
        yield 2

    for _ in answer():
        with tracer.start_as_current_span("caller's"):
            pass
    agent = only(span_exporter, "invoke_agent streamer")
    assert only(span_exporter, "inside").parent.span_id == agent.context.span_id
    assert all(span.parent is None for span in finished(span_exporter, "caller's"))


# --- the conversation id ----------------------------------------------------------------------


@pytest.mark.usefixtures("agents")
def test_the_conversation_id_comes_from_a_named_argument_by_position_keyword_or_default(
    span_exporter: InMemorySpanExporter,
) -> None:
    @toolkit.traced_agent("support", conversation="session")
    def answer(question: str, session: str = "default-session") -> str:
        return question

    answer("q", "by-position")
    answer("q", session="by-keyword")
    answer("q")
    ids = [
        span.attributes[names.GEN_AI_CONVERSATION_ID] for span in span_exporter.get_finished_spans()
    ]
    assert ids == ["by-position", "by-keyword", "default-session"]


@pytest.mark.usefixtures("agents")
def test_the_conversation_id_may_come_from_a_function_of_the_arguments_and_its_failure_is_an_event(
    span_exporter: InMemorySpanExporter,
) -> None:
    def of_request(request: dict[str, str]) -> str:
        return request["thread"]

    @toolkit.traced_agent("support", conversation=of_request)
    def answer(request: dict[str, str]) -> str:
        return "ok"

    assert answer({"thread": "t-1"}) == "ok"
    assert answer({}) == "ok"  # the hook raised KeyError: the call goes on
    first, second = span_exporter.get_finished_spans()
    assert first.attributes[names.GEN_AI_CONVERSATION_ID] == "t-1"
    assert names.GEN_AI_CONVERSATION_ID not in second.attributes
    (event,) = second.events
    assert event.attributes[names.HOOK] == "traced_agent.conversation"


def test_a_conversation_naming_no_parameter_is_refused_at_decoration() -> None:
    with pytest.raises(ConfigurationError, match=r"'sesion'.*one of \['question', 'session'\]"):

        @toolkit.traced_agent("support", conversation="sesion")
        def answer(question: str, session: str) -> str:
            return question


class Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text")


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.one_of(
        st.none(),
        st.text(max_size=600),
        st.integers(),
        st.binary(max_size=40),
        st.lists(st.integers(), max_size=5),
        st.just(Unprintable()),
    )
)
def test_any_argument_value_gives_a_bounded_conversation_id_or_none_and_never_fails_the_call(
    agents: AgentTelemetry, span_exporter: InMemorySpanExporter, value: object
) -> None:
    span_exporter.clear()

    @toolkit.traced_agent("support", conversation="session")
    def answer(session: object) -> object:
        return session

    assert answer(value) is value
    (span,) = span_exporter.get_finished_spans()
    conversation = span.attributes.get(names.GEN_AI_CONVERSATION_ID)
    assert conversation is None or (
        isinstance(conversation, str) and 0 < len(conversation) <= MAX_CONVERSATION_ID
    )
    if isinstance(value, str) and value:
        assert conversation == value[:MAX_CONVERSATION_ID]


# --- steps ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_steps_nest_under_their_agent_as_decorators_and_context_managers(
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    @toolkit.step("memory.m1")
    async def recall(query: str) -> list[str]:
        return [query]

    @toolkit.step("search", tool=True)
    def search(query: str) -> Iterator[str]:
        yield query

    @toolkit.traced_agent("support")
    async def answer(query: str) -> str:
        found = await recall(query)
        with toolkit.step("rerank") as span:
            span.set_attribute("app.candidates", len(found))
        async with toolkit.step("lookup", tool=True):
            hits = list(search(query))
        return hits[0]

    assert await answer("q") == "q"
    agent = only(span_exporter, "invoke_agent support")
    recall_span = only(span_exporter, "memory.m1")
    assert recall_span.attributes == {names.STEP_NAME: "memory.m1"}
    assert only(span_exporter, "rerank").attributes["app.candidates"] == 1
    tool = only(span_exporter, "execute_tool lookup")
    assert tool.attributes == {
        names.GEN_AI_OPERATION_NAME: "execute_tool",
        names.GEN_AI_TOOL_NAME: "lookup",
    }
    inner = only(span_exporter, "execute_tool search")
    assert inner.parent.span_id == tool.context.span_id
    for step in (recall_span, only(span_exporter, "rerank"), tool):
        assert step.parent.span_id == agent.context.span_id
    durations = {
        (p.attributes[names.STEP_NAME], p.attributes.get(names.GEN_AI_OPERATION_NAME))
        for p in points(metric_reader, names.STEP_DURATION)
    }
    # max_label_values=3: the fourth step name is "other"
    assert durations == {
        ("memory.m1", None),
        ("rerank", None),
        ("lookup", "execute_tool"),
        ("other", "execute_tool"),
    }


@pytest.mark.usefixtures("agents")
def test_a_step_context_manager_that_raises_marks_its_span_and_lets_the_error_through(
    span_exporter: InMemorySpanExporter,
) -> None:
    retrieve = toolkit.step("retrieve")
    with pytest.raises(KeyError), retrieve:
        raise KeyError("missing")
    with retrieve:  # the same object again: it holds no state of its own
        pass
    failed, ok = finished(span_exporter, "retrieve")
    assert failed.attributes[names.ERROR_TYPE] == "KeyError"
    assert names.ERROR_TYPE not in ok.attributes


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(step_names=st.lists(st.text(min_size=1, max_size=300).filter(str.strip), max_size=12))
def test_step_labels_keep_the_first_names_and_every_later_one_is_other(
    tracer_provider: TracerProvider, step_names: list[str]
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    set_current_agent_telemetry(
        AgentTelemetry(
            AgentSettings(max_label_values=5),
            tracer_provider=tracer_provider,
            meter_provider=provider,
        )
    )
    for name in step_names:
        with toolkit.step(name):
            pass
    labels = {p.attributes[names.STEP_NAME] for p in points(reader, names.STEP_DURATION)}
    distinct = list(dict.fromkeys(name[:128] for name in step_names))
    assert labels <= {*distinct[:5], names.GEN_AI_OTHER}
    assert len(labels - {names.GEN_AI_OTHER}) == min(len(distinct), 5)
    assert (names.GEN_AI_OTHER in labels) == (len(distinct) > 5)
    provider.shutdown()


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        toolkit.step(" ")
    with pytest.raises(ConfigurationError):
        toolkit.traced_agent("")


# --- the kill switch --------------------------------------------------------------------------


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_the_tracing_agents_flag_off_records_nothing_and_every_function_still_runs(
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    @toolkit.traced_agent("support")
    async def answer() -> list[int]:
        with toolkit.step("rerank"):
            pass
        with toolkit.llm_call("gpt-4o", provider="openai") as call:
            call.usage(input_tokens=1, output_tokens=1)
        return [chunk async for chunk in stream()]

    @toolkit.step("stream")
    async def stream() -> AsyncIterator[int]:
        yield 1

    with toolkit.flags.override({toolkit.flags.TRACING_AGENTS: "off"}):
        assert await answer() == [1]
    assert span_exporter.get_finished_spans() == ()
    assert not points(metric_reader, names.AGENT_DURATION)
    assert not points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)


# --- every decision inside an agent lands on its span -----------------------------------------


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_every_toolkit_decision_inside_an_agent_lands_on_its_span(
    span_exporter: InMemorySpanExporter, tracer_provider: TracerProvider
) -> None:
    await decide_everything_inside(
        lambda body: toolkit.traced_agent("decider")(body), tracer_provider
    )
    assert_decisions_on(span_exporter, "invoke_agent decider")


@pytest.mark.usefixtures("agents")
@pytest.mark.anyio
async def test_every_toolkit_decision_inside_an_llm_call_lands_on_its_span(
    span_exporter: InMemorySpanExporter, tracer_provider: TracerProvider
) -> None:
    def in_a_call(body: Any) -> Any:
        async def call() -> None:
            async with toolkit.llm_call("gpt-4o", provider="openai"):
                await body()

        return call

    await decide_everything_inside(in_a_call, tracer_provider)
    assert_decisions_on(span_exporter, "chat gpt-4o")


async def decide_everything_inside(wrap: Any, tracer_provider: TracerProvider) -> None:
    """A cache miss and hit, a retry, a breaker that opens (answered by a fallback), a pool
    wait past its threshold and a refused acquire, and a flag variant served by an override,
    all inside the body ``wrap`` makes an agent or a model call."""
    from toolkit.resilience import BreakerRegistry, RetryPolicy, set_current_breakers

    registry = BreakerRegistry(toolkit.backends.MemoryBackend())
    set_current_breakers(registry)
    registry.get("decider-llm", minimum_calls=1, failure_rate=0.5)
    toolkit.flags.declare("decider.prompt", variants={"v1": 1, "v2": 2}, default="v1")

    @toolkit.cached(ttl="1m", namespace="decider")
    async def classify(text: str) -> str:
        return text

    async def no_wait(seconds: float) -> None:
        del seconds

    async def canned() -> str:
        return "canned"

    attempts = []

    @toolkit.resilient(
        breaker="decider-llm",
        retries=RetryPolicy(on=TimeoutError, attempts=2, sleep=no_wait),
        fallback=canned,
    )
    async def flaky() -> str:
        attempts.append(1)
        raise TimeoutError("slow")

    pool: toolkit.AgentPool[list[str]] = toolkit.AgentPool(
        list,
        name="decider",
        size=1,
        acquire_timeout="20ms",
        wait_threshold="10ms",
        tracer_provider=tracer_provider,
    )

    async def body() -> None:
        await classify("a")
        await classify("a")
        assert await flaky() == "canned"  # two attempts fail: the breaker opens
        assert await flaky() == "canned"  # refused by the open breaker
        async with pool.acquire():
            with pytest.raises(toolkit.PoolTimeoutError):  # waits past the threshold
                async with pool.acquire():
                    pass
        with toolkit.flags.override({"decider.prompt": "v2"}):
            assert toolkit.flags.variant("decider.prompt") == "v2"

    await wrap(body)()
    await pool.close()


def assert_decisions_on(exporter: InMemorySpanExporter, name: str) -> None:
    span = only(exporter, name)
    events = [event.name for event in span.events]
    results = [
        event.attributes[names.CACHE_RESULT]
        for event in span.events
        if event.name == names.CACHE_LOOKUP_EVENT
    ]
    assert results == ["miss", "hit"]
    assert names.RETRY_ATTEMPT_EVENT in events
    assert names.CIRCUIT_BREAKER_STATE_CHANGE_EVENT in events
    assert names.RESILIENCE_FALLBACK_EVENT in events
    assert names.POOL_EXHAUSTED_EVENT in events
    assert names.FEATURE_FLAG_EVALUATION_EVENT in events
    assert span.attributes.get(names.ERROR_TYPE) == names.CIRCUIT_OPEN
    waits = finished(exporter, names.POOL_WAIT_SPAN)
    assert waits
    assert all(wait.parent.span_id == span.context.span_id for wait in waits)


# --- the docs ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("agents")
def test_the_python_snippets_of_the_agents_page_run_and_record_their_spans(
    span_exporter: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "agents.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    assert len(blocks) >= 4
    for block in blocks:
        exec(compile(block, "docs/agents.md", "exec"), {"__name__": "snippet"})
    spans = {span.name for span in span_exporter.get_finished_spans()}
    assert {"invoke_agent support", "invoke_agent research", "memory.m1", "rerank"} <= spans
    assert {"execute_tool search", "chat gpt-4o"} <= spans
    assert capsys.readouterr().out.splitlines() == [
        "WHERE IS MY ORDER?",
        "result for otel",
        "Your order ships today.",
        "Hello",
        "Hi there",
        "Bonjour",
    ]
