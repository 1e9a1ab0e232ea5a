"""The pydantic-ai plugin: agents traced with the app's providers through pydantic-ai's own
instrumentation, their spans nested under the request's span, one per operation; and
ToolkitModel's breaker, retries (the toolkit's only) and per-caller cache of deterministic
requests. Run with pydantic-ai's offline TestModel and with its OpenAI provider against a
real local OpenAI-compatible server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.providers.openai import OpenAIProvider

import toolkit
from tests.plugins._serving import installed
from tests.support.asgi import lifespan
from tests.support.openai_server import Failure, OpenAIServer, Reply, Usage
from tests.support.otel import counter_value, points
from toolkit.resilience import RetryPolicy
from toolkit.telemetry import names
from toolkit_pydantic_ai import ToolkitModel, instrumentation, model_errors

pytestmark = pytest.mark.anyio

NO_WAIT = RetryPolicy(on=model_errors, attempts=3, wait_initial=0, wait_jitter=0)


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _agents_uninstrumented(server: OpenAIServer) -> Iterator[None]:
    """pydantic-ai's process-wide default (``Agent.instrument_all``) as a fresh process has
    it, and the server's script and record empty."""
    server.reset()
    yield
    Agent.instrument_all(False)


@pytest.fixture
async def openai_model(server: OpenAIServer) -> AsyncIterator[Callable[[], OpenAIChatModel]]:
    """Makes pydantic-ai's OpenAI model of the local server (the SDK client as pydantic-ai
    builds it: its own retries on, 2 by default), closing their clients after the test."""
    clients: list[openai.AsyncOpenAI] = []

    def make() -> OpenAIChatModel:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k")
        clients.append(client)
        return OpenAIChatModel("gpt-test", provider=OpenAIProvider(openai_client=client))

    yield make
    for client in clients:
        await client.close()


def agent_app(agent: Agent[None, str]) -> FastAPI:
    app = FastAPI()

    @app.get("/ask")
    async def ask(prompt: str = "What is the weather in Oslo?") -> Any:
        try:
            result = await agent.run(prompt)
        except ModelAPIError as exc:  # the provider failed: the app says so (a breaker's
            # refusal, CircuitOpenError, is left to install()'s 503)
            return JSONResponse({"error": type(exc).__name__}, status_code=502)
        return {"output": str(result.output)}

    return app


def by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name.startswith(prefix)]


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def assert_nested_once(spans: tuple[ReadableSpan, ...], *, chats: int, tools: int) -> None:
    """One server span, one ``invoke_agent`` under it, and the ``chat`` and ``execute_tool``
    spans under that, all of one trace: no operation traced twice."""
    [server] = [span for span in spans if span.name.startswith("GET ")]
    [agent] = by_name(spans, "invoke_agent")
    assert parent_of(agent) == server.context.span_id
    assert len(by_name(spans, "chat ")) == chats
    assert len(by_name(spans, "execute_tool ")) == tools
    for span in [*by_name(spans, "chat "), *by_name(spans, "execute_tool ")]:
        assert parent_of(span) == agent.context.span_id, span.name
    assert {span.context.trace_id for span in spans} == {server.context.trace_id}
    assert len(spans) == 2 + chats + tools


def weather_agent(model: Any, **options: Any) -> Agent[None, str]:
    agent: Agent[None, str] = Agent(model, name="weather", **options)

    @agent.tool_plain
    def forecast(city: str) -> str:
        return f"sunny in {city}"

    return agent


# -- traced with the app's providers ------------------------------------------------------


async def test_agent_spans_nest_under_the_request_span_once_each_with_the_test_model(
    tracer_provider: Any, meter_provider: Any, span_exporter: InMemorySpanExporter
) -> None:
    """TestModel calls the tool, then answers: invoke_agent, chat, execute_tool, chat, all
    under GET /ask, on the provider given to install() (the global one is never set)."""
    app = agent_app(weather_agent(ToolkitModel(TestModel())))
    async with installed(app, tracer_provider, meter_provider) as client:
        assert (await client.get("/ask")).status_code == 200
    assert_nested_once(span_exporter.get_finished_spans(), chats=2, tools=1)
    [agent] = by_name(span_exporter.get_finished_spans(), "invoke_agent")
    assert agent.attributes is not None
    assert agent.attributes["gen_ai.agent.name"] == "weather"


async def test_agent_spans_nest_under_the_request_span_through_the_openai_provider(
    openai_model: Any,
    server: OpenAIServer,
    tracer_provider: Any,
    meter_provider: Any,
    span_exporter: InMemorySpanExporter,
) -> None:
    """One chat span per request the server received, carrying the usage it reported."""
    server.script(Reply("Sunny.", usage=Usage(21, 2)))
    app = agent_app(weather_agent(ToolkitModel(openai_model())))
    async with installed(app, tracer_provider, meter_provider) as client:
        assert (await client.get("/ask")).json() == {"output": "Sunny."}
    spans = span_exporter.get_finished_spans()
    assert_nested_once(spans, chats=1, tools=0)
    [chat] = by_name(spans, "chat ")
    assert chat.name == "chat gpt-test"
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.usage.input_tokens"] == 21
    assert chat.attributes["gen_ai.usage.output_tokens"] == 2
    assert len(server.received()) == 1


async def test_prompts_are_not_recorded_unless_the_environment_opts_in(
    openai_model: Any,
    server: OpenAIServer,
    tracer_provider: Any,
    meter_provider: Any,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT decides, not pydantic-ai's default."""
    for capture, recorded in [(None, False), ("SPAN_ONLY", True)]:
        if capture is not None:
            monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", capture)
        span_exporter.clear()
        app = agent_app(weather_agent(ToolkitModel(openai_model())))
        async with installed(app, tracer_provider, meter_provider) as client:
            await client.get("/ask", params={"prompt": "secret question"})
        [chat] = by_name(span_exporter.get_finished_spans(), "chat ")
        text = str(dict(chat.attributes or {}))
        assert ("secret question" in text) is recorded, capture


async def test_tool_arguments_and_results_are_cut_to_the_content_max_length(
    tracer_provider: Any, meter_provider: Any, span_exporter: InMemorySpanExporter
) -> None:
    """With content captured, a tool's long arguments and result are on its span cut to
    ``agents.content_max_length`` (their beginning); short ones whole."""
    long_query, long_result = "q" * 500, "r" * 500

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(
                parts=[
                    ToolCallPart("lookup", {"query": long_query}),
                    ToolCallPart("short", {"query": "q"}),
                ]
            )
        return ModelResponse(parts=[TextPart("done")])

    agent: Agent[None, str] = Agent(FunctionModel(model), name="search")

    @agent.tool_plain
    def lookup(query: str) -> str:
        return long_result

    @agent.tool_plain
    def short(query: str) -> str:
        return "found"

    content = {"capture_content": True, "content_max_length": 40}
    async with installed(agent_app(agent), tracer_provider, meter_provider, agents=content) as http:
        assert (await http.get("/ask")).json() == {"output": "done"}
    spans = {
        span.name: dict(span.attributes or {})
        for span in by_name(span_exporter.get_finished_spans(), "execute_tool ")
    }
    looked_up = spans["execute_tool lookup"]
    assert looked_up["gen_ai.tool.call.arguments"] == '{"query":"' + "q" * 30
    assert looked_up["gen_ai.tool.call.result"] == "r" * 40
    assert spans["execute_tool short"]["gen_ai.tool.call.arguments"] == '{"query":"q"}'
    assert spans["execute_tool short"]["gen_ai.tool.call.result"] == "found"


async def test_the_apps_own_instrument_all_is_kept_with_one_log_line(
    tracer_provider: Any, meter_provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "toolkit.plugins.pydantic_ai")
    Agent.instrument_all(True)
    toolkit.install(FastAPI(), tracer_provider=tracer_provider, meter_provider=meter_provider)
    assert Agent._instrument_default is True
    [line] = [r.getMessage() for r in caplog.records if r.name == "toolkit.plugins.pydantic_ai"]
    assert "keep the instrumentation the app chose" in line


async def test_the_default_goes_back_when_the_app_shuts_down(
    tracer_provider: Any, meter_provider: Any
) -> None:
    app = FastAPI()
    toolkit.install(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    async with lifespan(app):
        assert Agent._instrument_default is instrumentation()
        assert instrumentation() is not None
    assert Agent._instrument_default is False
    assert instrumentation() is None


async def test_a_plugin_switched_off_by_the_setting_does_nothing(
    tracer_provider: Any, meter_provider: Any, span_exporter: InMemorySpanExporter
) -> None:
    app = agent_app(weather_agent(TestModel()))
    settings = {"plugins": {"disabled": ["pydantic-ai"]}}
    async with installed(app, tracer_provider, meter_provider, **settings) as client:
        assert Agent._instrument_default is False
        assert (await client.get("/ask")).status_code == 200
    assert [span.name for span in span_exporter.get_finished_spans()] == ["GET /ask"]


def test_the_plugin_does_nothing_with_one_log_line_when_pydantic_ai_is_absent() -> None:
    """A process where ``import pydantic_ai`` fails, as where it is not installed."""
    script = textwrap.dedent(
        """
        import logging, sys
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name == "pydantic_ai" or name.startswith("pydantic_ai."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Blocker())
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        from fastapi import FastAPI
        import toolkit
        installed = toolkit.install(FastAPI())
        print("applied:", "pydantic-ai" in installed.plugins.plugins)
        print("imported:", "pydantic_ai" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TOOLKIT_TELEMETRY__PROMETHEUS": "false"},
        check=True,
    )
    # Only this plugin's part: the other plugins installed beside it apply as they would.
    assert done.stdout.splitlines() == ["applied: False", "imported: False"]
    plugin_lines = [line for line in done.stderr.splitlines() if "pydantic" in line]
    assert plugin_lines == [
        "toolkit.plugins: toolkit plugin pydantic-ai does nothing: pydantic_ai is not installed"
    ]


# -- ToolkitModel: breaker, retries, cache -------------------------------------------------


async def test_the_breaker_opens_after_the_server_fails_and_refuses_at_once(
    openai_model: Any, server: OpenAIServer, tracer_provider: Any, meter_provider: Any
) -> None:
    """Named per provider and model, it counts each call's final outcome (three attempts
    are one failure); once open, no request reaches the server and the route answers 503
    with Retry-After."""
    model = ToolkitModel(openai_model(), retries=NO_WAIT)
    assert model.toolkit_breaker == "openai:gpt-test"
    app = agent_app(Agent(model, name="plain"))
    server.fail(500, times=6)
    breaker = {"minimum_calls": 2, "failure_rate": 0.5, "open_duration": "1m"}
    async with installed(app, tracer_provider, meter_provider, resilience=breaker) as client:
        for _ in range(2):
            assert (await client.get("/ask")).status_code == 502
        assert len(server.received()) == 6
        refused = await client.get("/ask")
        assert refused.status_code == 503
        assert "openai:gpt-test" in refused.text
        assert int(refused.headers["retry-after"]) > 0
    assert len(server.received()) == 6


async def test_retries_happen_at_the_toolkit_level_only(
    openai_model: Any, server: OpenAIServer, tracer_provider: Any, meter_provider: Any
) -> None:
    """Two 500s, then an answer: three requests in all, none of them an SDK retry (the
    client's own max_retries, 2 by default, is switched off)."""
    server.fail(500, times=2)
    app = agent_app(Agent(ToolkitModel(openai_model(), retries=NO_WAIT), name="plain"))
    async with installed(app, tracer_provider, meter_provider) as client:
        assert (await client.get("/ask")).json() == {"output": "Hello from the test server."}
    received = server.received()
    assert len(received) == 3
    assert [r.headers.get("x-stainless-retry-count") for r in received] == ["0", "0", "0"]


async def test_a_request_that_keeps_failing_is_sent_as_many_times_as_the_toolkit_attempts(
    openai_model: Any, server: OpenAIServer, tracer_provider: Any, meter_provider: Any
) -> None:
    """Three attempts are three requests, not 3 x 3."""
    server.fail(503, times=10)
    app = agent_app(Agent(ToolkitModel(openai_model(), retries=NO_WAIT), name="plain"))
    async with installed(app, tracer_provider, meter_provider) as client:
        assert (await client.get("/ask")).json() == {"error": "ModelUnavailableError"}
    assert len(server.received()) == 3


async def test_a_deterministic_request_is_served_from_the_cache_per_caller(
    openai_model: Any, server: OpenAIServer, tracer_provider: Any, meter_provider: Any
) -> None:
    """The same question at temperature 0: the second time from the cache for the same
    caller (no request reaches the server); another caller misses."""
    model = ToolkitModel(openai_model(), cache_ttl="1m")
    agent: Agent[None, str] = Agent(model, name="plain", model_settings={"temperature": 0})
    app = agent_app(agent)
    alice = {"authorization": "Bearer alice"}
    bob = {"authorization": "Bearer bob"}
    async with installed(app, tracer_provider, meter_provider) as client:
        first = await client.get("/ask", headers=alice)
        again = await client.get("/ask", headers=alice)
        assert first.json() == again.json()
        assert len(server.received()) == 1
        await client.get("/ask", headers=bob)
        assert len(server.received()) == 2
        await client.get("/ask", headers=alice, params={"prompt": "another question"})
        assert len(server.received()) == 3


async def test_a_request_that_is_not_deterministic_is_never_cached(
    openai_model: Any, server: OpenAIServer, tracer_provider: Any, meter_provider: Any
) -> None:
    model = ToolkitModel(openai_model(), cache_ttl="1m")
    app = agent_app(Agent(model, name="plain"))
    async with installed(app, tracer_provider, meter_provider) as client:
        await client.get("/ask")
        await client.get("/ask")
    assert len(server.received()) == 2


async def test_a_cached_model_called_outside_a_request_goes_to_the_model(
    openai_model: Any,
    server: OpenAIServer,
) -> None:
    """No caller outside a request: no cache, and no error either."""
    model = ToolkitModel(openai_model(), cache_ttl="1m")
    agent: Agent[None, str] = Agent(model, model_settings={"temperature": 0})
    assert (await agent.run("hi")).output == "Hello from the test server."
    assert (await agent.run("hi")).output == "Hello from the test server."
    assert len(server.received()) == 2


async def test_a_streamed_run_is_traced_and_sent_once(
    openai_model: Any,
    server: OpenAIServer,
    tracer_provider: Any,
    meter_provider: Any,
    span_exporter: Any,
    metric_reader: Any,
) -> None:
    server.script(Reply("one two three", usage=Usage(4, 3)))
    agent: Agent[None, str] = Agent(ToolkitModel(openai_model()), name="streamer")
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> dict[str, str]:
        async with agent.run_stream("count") as result:
            return {"output": await result.get_output()}

    async with installed(app, tracer_provider, meter_provider) as client:
        assert (await client.get("/stream")).json() == {"output": "one two three"}
    [received] = server.received()
    assert received.stream
    [chat] = by_name(span_exporter.get_finished_spans(), "chat ")
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.usage.output_tokens"] == 3
    # The time to its first chunk, in the toolkit's metric (pydantic-ai's stamp), once.
    [first] = points(metric_reader, names.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK)
    [duration] = points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)
    assert first.count == duration.count == 1
    assert 0 < first.sum <= duration.sum
    assert first.attributes[names.GEN_AI_REQUEST_MODEL] == "gpt-test"


# -- the toolkit's GenAI metrics -----------------------------------------------------------


async def test_each_request_counts_its_tokens_duration_and_cost_in_the_toolkits_metrics(
    openai_model: Any,
    server: OpenAIServer,
    tracer_provider: Any,
    meter_provider: Any,
    metric_reader: Any,
    span_exporter: InMemorySpanExporter,
) -> None:
    """Tokens by type and agent, the duration of each attempt (a failed one with its
    error.type), the cost by the price table on the chat span, and nothing from pydantic-ai's
    own instruments (no series counted twice)."""
    server.script(Failure(500), Reply("Sunny.", usage=Usage(1000, 500)))
    app = agent_app(Agent(ToolkitModel(openai_model(), retries=NO_WAIT), name="weather"))
    prices = {"prices": {"gpt-test": {"input": 2.0, "output": 10.0}}}
    async with installed(app, tracer_provider, meter_provider, agents=prices) as client:
        assert (await client.get("/ask")).status_code == 200
    tokens = {
        (p.attributes[names.GEN_AI_TOKEN_TYPE], p.attributes[names.GEN_AI_AGENT_NAME]): p.sum
        for p in points(metric_reader, names.GEN_AI_CLIENT_TOKEN_USAGE)
    }
    assert tokens == {("input", "weather"): 1000, ("output", "weather"): 500}
    durations = points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)
    assert sorted(p.attributes.get(names.ERROR_TYPE, "") for p in durations) == ["", "500"]
    assert all(p.attributes[names.GEN_AI_REQUEST_MODEL] == "gpt-test" for p in durations)
    cost = counter_value(metric_reader, names.GEN_AI_COST, gen_ai__agent__name="weather")
    assert cost == pytest.approx((1000 * 2.0 + 500 * 10.0) / 1_000_000)
    [chat] = by_name(span_exporter.get_finished_spans(), "chat ")
    assert chat.attributes is not None
    assert chat.attributes[names.GEN_AI_COST_ATTRIBUTE] == pytest.approx(cost)
    scopes = {
        scope.scope.name
        for resource in metric_reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
    }
    assert "pydantic-ai" not in scopes


async def test_a_request_pydantic_ai_opened_no_span_for_gets_the_toolkits_own(
    tracer_provider: Any,
    meter_provider: Any,
    span_exporter: InMemorySpanExporter,
    metric_reader: Any,
) -> None:
    """An agent whose instrumentation is off: its requests are still model calls, in one
    ``chat`` span of the toolkit's, under the request's span."""
    agent = weather_agent(ToolkitModel(TestModel()))
    agent.instrument = False
    app = agent_app(agent)
    async with installed(app, tracer_provider, meter_provider) as client:
        assert (await client.get("/ask")).status_code == 200
    spans = span_exporter.get_finished_spans()
    chats = by_name(spans, "chat ")
    assert [span.instrumentation_scope.name for span in chats] == [names.INSTRUMENTATION_SCOPE] * 2
    [server_span] = by_name(spans, "GET ")
    assert {parent_of(span) for span in chats} == {server_span.context.span_id}
    [duration] = points(metric_reader, names.GEN_AI_CLIENT_OPERATION_DURATION)
    assert duration.count == 2


async def test_a_request_served_from_the_cache_counts_no_tokens_and_what_it_saved(
    openai_model: Any,
    server: OpenAIServer,
    tracer_provider: Any,
    meter_provider: Any,
    metric_reader: Any,
) -> None:
    server.script(Reply("Sunny.", usage=Usage(100, 10)))
    model = ToolkitModel(openai_model(), cache_ttl="1m")
    app = agent_app(Agent(model, name="plain", model_settings={"temperature": 0}))
    async with installed(app, tracer_provider, meter_provider) as client:
        await client.get("/ask")
        await client.get("/ask")
    assert len(server.received()) == 1
    [input_tokens] = [
        p
        for p in points(metric_reader, names.GEN_AI_CLIENT_TOKEN_USAGE)
        if p.attributes[names.GEN_AI_TOKEN_TYPE] == "input"
    ]
    assert (input_tokens.count, input_tokens.sum) == (1, 100)
    # What the hit saved: the call and its tokens, for the caches dashboard.
    saved = {"toolkit__cache__name": "pydantic_ai", "gen_ai__request__model": "gpt-test"}
    assert counter_value(metric_reader, names.CACHE_SAVED_CALLS, **saved) == 1
    assert counter_value(metric_reader, names.CACHE_SAVED_TOKENS, **saved) == 110
