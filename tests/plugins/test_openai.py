"""The OpenAI SDK plugin: every chat completion and embedding request of an instrumented
client recorded through toolkit.llm_call (streams to their end, early close, errors), a
breaker per model with the toolkit's retries only, and embeddings cached per text. Run with
the real SDK, sync and async, against a real local OpenAI-compatible server, counting the
requests it received."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from importlib.metadata import entry_points
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import toolkit
from tests.plugins._serving import installed
from tests.support.openai_server import OpenAIServer, Reply, Usage, embedding
from tests.support.otel import counter_value, points
from toolkit.agents import AgentTelemetry, set_current_agent_telemetry
from toolkit.plugins import PLUGIN_GROUP
from toolkit.resilience import RetryPolicy, provider_errors
from toolkit.settings import AgentSettings
from toolkit.telemetry import names
from toolkit_openai import instrument, is_instrumented, uninstrument
from toolkit_openai._endpoint import provider_of

pytestmark = pytest.mark.anyio

NO_WAIT = RetryPolicy(on=provider_errors, attempts=3, wait_initial=0, wait_jitter=0)
WORDS = "one two three four five six seven eight"


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_server(server: OpenAIServer) -> None:
    server.reset()


def recording(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, **environ: str
) -> AgentTelemetry:
    """The agent layer on the test's providers, as install() would set it."""
    telemetry = AgentTelemetry(
        AgentSettings(),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        environ=environ,
    )
    set_current_agent_telemetry(telemetry)
    return telemetry


@pytest.fixture
def agents(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> AgentTelemetry:
    return recording(tracer_provider, meter_provider)


@pytest.fixture
async def make_async(server: OpenAIServer) -> AsyncIterator[Callable[..., openai.AsyncOpenAI]]:
    """Instrumented async clients of the local server (the SDK's own retries as it
    defaults them: 2), closed after the test."""
    clients: list[openai.AsyncOpenAI] = []

    def make(**options: Any) -> openai.AsyncOpenAI:
        options.setdefault("retries", NO_WAIT)
        client = instrument(openai.AsyncOpenAI(base_url=server.base_url, api_key="k"), **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def sync_client(server: OpenAIServer) -> Iterator[openai.OpenAI]:
    client = instrument(openai.OpenAI(base_url=server.base_url, api_key="k"))
    yield client
    client.close()


def spans_named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def histogram(reader: InMemoryMetricReader, name: str, **wanted: Any) -> list[HistogramDataPoint]:
    return [
        point
        for point in points(reader, name)
        if all(point.attributes.get(key.replace("__", ".")) == v for key, v in wanted.items())
    ]


USER = [{"role": "user", "content": "What is the capital of France?"}]


# -- one call, recorded ---------------------------------------------------------------------


async def test_a_chat_completion_is_one_client_span_with_what_the_answer_said(
    agents: AgentTelemetry,
    make_async: Any,
    server: OpenAIServer,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    """Request and response model, usage with the cache-read part, finish reasons, the
    server's address and port; the token and duration metrics."""
    server.script(Reply("Paris", usage=Usage(12, 1, cached_tokens=8), model="gpt-test-0801"))
    answer = await make_async().chat.completions.create(model="gpt-test", messages=USER)
    assert answer.choices[0].message.content == "Paris"
    [span] = span_exporter.get_finished_spans()
    assert span.name == "chat gpt-test"
    assert span.kind is SpanKind.CLIENT
    assert attributes(span) | {"gen_ai.response.id": None} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.response.model": "gpt-test-0801",
        "gen_ai.response.id": None,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 1,
        "gen_ai.usage.cache_read.input_tokens": 8,
        "server.address": "127.0.0.1",
        "server.port": server.port,
    }
    tokens = {
        p.attributes["gen_ai.token.type"]: p.sum
        for p in histogram(metric_reader, "gen_ai.client.token.usage")
    }
    assert tokens == {"input": 12, "output": 1}
    [duration] = histogram(
        metric_reader, "gen_ai.client.operation.duration", gen_ai__response__model="gpt-test-0801"
    )
    assert duration.count == 1
    # The server, from the client's configuration, on the metrics too (as the conventions advise).
    assert (duration.attributes["server.address"], duration.attributes["server.port"]) == (
        "127.0.0.1",
        server.port,
    )
    assert len(server.received()) == 1


def test_a_sync_clients_chat_completion_is_recorded_the_same_way(
    agents: AgentTelemetry,
    sync_client: openai.OpenAI,
    server: OpenAIServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    server.script(Reply("Paris", usage=Usage(9, 1)))
    answer = sync_client.chat.completions.create(model="gpt-test", messages=USER)
    assert answer.choices[0].message.content == "Paris"
    [span] = span_exporter.get_finished_spans()
    assert span.name == "chat gpt-test"
    assert attributes(span)["gen_ai.usage.input_tokens"] == 9
    assert attributes(span)["server.port"] == server.port


async def test_a_sync_client_is_recorded_not_guarded_and_keeps_the_sdks_retries(
    server: OpenAIServer,
    tracer_provider: Any,
    meter_provider: Any,
    span_exporter: InMemorySpanExporter,
) -> None:
    """What the README says a sync client gets: each call recorded (its failure on its
    span), sent with the SDK's own retries, and never refused by a breaker, even past the
    failures that open an async client's (see the breaker test below)."""
    client = instrument(openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=1))
    app = FastAPI()

    @app.get("/ask")
    def ask() -> Any:  # a sync route: run in a worker thread
        try:
            client.chat.completions.create(model="gpt-test", messages=USER)
        except openai.APIStatusError as exc:
            return {"error": exc.status_code}
        return {"ok": True}

    server.fail(500, times=8, retry_after=0.001)
    breaker = {"minimum_calls": 2, "failure_rate": 0.5, "open_duration": "1m"}
    try:
        async with installed(app, tracer_provider, meter_provider, resilience=breaker) as http:
            for _ in range(4):
                assert (await http.get("/ask")).json() == {"error": 500}
            assert (await http.get("/ask")).json() == {"ok": True}
    finally:
        client.close()
    retries = [r.headers.get("x-stainless-retry-count") for r in server.received()]
    assert retries == ["0", "1"] * 4 + ["0"]
    chats = spans_named(span_exporter, "chat ")
    assert [attributes(span).get("error.type") for span in chats] == ["500"] * 4 + [None]


async def test_an_embeddings_request_is_an_embeddings_span_with_its_input_tokens(
    agents: AgentTelemetry, make_async: Any, span_exporter: InMemorySpanExporter
) -> None:
    answer = await make_async().embeddings.create(model="emb", input=["a b", "c"])
    assert len(answer.data) == 2
    [span] = span_exporter.get_finished_spans()
    assert span.name == "embeddings emb"
    assert attributes(span)["gen_ai.operation.name"] == "embeddings"
    assert attributes(span)["gen_ai.usage.input_tokens"] == 3


def test_the_provider_is_the_base_urls_where_the_host_says_so() -> None:
    assert provider_of("api.openai.com") == "openai"
    assert provider_of("my-resource.openai.azure.com") == "azure.ai.openai"
    assert provider_of("api.groq.com") == "groq"
    assert provider_of("127.0.0.1") == "openai"


async def test_the_provider_option_names_it_and_prefixes_the_breakers(
    agents: AgentTelemetry, make_async: Any, span_exporter: InMemorySpanExporter
) -> None:
    await make_async(provider="vllm").chat.completions.create(model="m", messages=USER)
    [span] = span_exporter.get_finished_spans()
    assert attributes(span)["gen_ai.provider.name"] == "vllm"


# -- streams --------------------------------------------------------------------------------


async def test_a_stream_is_measured_to_its_end_not_to_its_headers(
    agents: AgentTelemetry,
    make_async: Any,
    server: OpenAIServer,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    """Ten chunks 50 ms apart after the headers: the span, the duration and the usage come
    from the end of the stream (the usage chunk include_usage asks for)."""
    server.script(Reply(WORDS, usage=Usage(7, 8, cached_tokens=4), chunk_delay=0.05))
    stream = await make_async().chat.completions.create(
        model="gpt-test", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    assert span_exporter.get_finished_spans() == ()  # the headers are in; the stream is not
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == WORDS
    [span] = span_exporter.get_finished_spans()
    assert span.end_time is not None
    assert span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 >= 0.3
    values = attributes(span)
    assert values["gen_ai.request.stream"] is True
    assert values["gen_ai.usage.input_tokens"] == 7
    assert values["gen_ai.usage.output_tokens"] == 8
    assert values["gen_ai.usage.cache_read.input_tokens"] == 4
    assert values["gen_ai.response.finish_reasons"] == ("stop",)
    assert values["gen_ai.response.model"] == "gpt-test"
    [duration] = histogram(metric_reader, "gen_ai.client.operation.duration")
    assert duration.sum >= 0.3
    [first] = histogram(metric_reader, "gen_ai.client.operation.time_to_first_chunk")
    assert first.sum < duration.sum


def test_a_sync_stream_ends_its_span_when_exhausted(
    agents: AgentTelemetry,
    sync_client: openai.OpenAI,
    server: OpenAIServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    """Without include_usage there is no usage to read; the finish reason is still there."""
    server.script(Reply("a b c"))
    stream = sync_client.chat.completions.create(model="gpt-test", messages=USER, stream=True)
    chunks = iter(stream)
    next(chunks)
    assert span_exporter.get_finished_spans() == ()
    rest = list(chunks)
    assert rest[-1].choices[0].finish_reason == "stop"
    [span] = span_exporter.get_finished_spans()
    assert "gen_ai.usage.input_tokens" not in attributes(span)
    assert attributes(span)["gen_ai.response.finish_reasons"] == ("stop",)


async def test_a_stream_closed_early_ends_its_span_at_once_and_without_error(
    agents: AgentTelemetry,
    make_async: Any,
    sync_client: openai.OpenAI,
    server: OpenAIServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    """The SDK's own close(), async and sync, and leaving an ``async with``."""
    slow = Reply(WORDS, chunk_delay=0.2)
    client = make_async()
    server.script(slow, slow, slow)
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    await anext(aiter(stream))
    await stream.close()
    assert len(span_exporter.get_finished_spans()) == 1

    async with await client.chat.completions.create(
        model="m", messages=USER, stream=True
    ) as stream:
        await anext(aiter(stream))
    assert len(span_exporter.get_finished_spans()) == 2

    sync_stream = sync_client.chat.completions.create(model="m", messages=USER, stream=True)
    next(iter(sync_stream))
    sync_stream.close()
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 3
    assert all(span.status.status_code is not StatusCode.ERROR for span in spans)
    assert all((s.end_time or 0) - (s.start_time or 0) < 1.0e9 for s in spans)  # not at its end


# -- errors, retries, breakers -----------------------------------------------------------------


async def test_a_rejected_request_fails_once_with_its_status_as_error_type(
    agents: AgentTelemetry,
    make_async: Any,
    server: OpenAIServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    """A 400 is the caller's: not retried, by the toolkit or the SDK."""
    server.fail(400, times=5)
    with pytest.raises(openai.BadRequestError):
        await make_async().chat.completions.create(model="m", messages=USER)
    [span] = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "400"
    assert len(server.received()) == 1


async def test_retries_happen_at_the_toolkit_level_only(
    agents: AgentTelemetry, make_async: Any, server: OpenAIServer
) -> None:
    """Two 500s, then an answer: three requests, none an SDK retry (its max_retries, 2 by
    default, is off while the toolkit retries)."""
    server.fail(500, times=2)
    answer = await make_async().chat.completions.create(model="m", messages=USER)
    assert answer.choices[0].message.content == "Hello from the test server."
    received = server.received()
    assert [r.headers.get("x-stainless-retry-count") for r in received] == ["0", "0", "0"]


async def test_a_request_that_keeps_failing_is_sent_as_often_as_the_toolkit_attempts(
    agents: AgentTelemetry, make_async: Any, server: OpenAIServer
) -> None:
    """Three toolkit attempts are three requests, not 3 x 3."""
    server.fail(503, times=20)
    with pytest.raises(openai.InternalServerError):
        await make_async().chat.completions.create(model="m", messages=USER)
    assert len(server.received()) == 3


async def test_without_toolkit_retries_the_sdk_keeps_its_own(
    agents: AgentTelemetry, make_async: Any, server: OpenAIServer
) -> None:
    server.fail(500, times=2)
    client = make_async(retries=None)
    await client.with_options(max_retries=2).chat.completions.create(model="m", messages=USER)
    assert [r.headers.get("x-stainless-retry-count") for r in server.received()] == ["0", "1", "2"]


def chat_app(client: openai.AsyncOpenAI, **routes: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/ask")
    async def ask(model: str = "gpt-test") -> Any:
        try:
            answer = await client.chat.completions.create(model=model, messages=USER)
        except openai.APIStatusError as exc:  # the provider failed: the app says so (a
            # breaker's refusal is left to install()'s 503)
            return {"error": exc.status_code}
        return {"output": answer.choices[0].message.content}

    @app.get("/embed")
    async def embed(texts: str) -> Any:
        answer = await client.embeddings.create(model="emb", input=texts.split(","))
        return {"dimensions": [len(item.embedding) for item in answer.data]}

    return app


async def test_the_breaker_of_a_model_opens_and_refuses_without_a_request(
    make_async: Any, server: OpenAIServer, tracer_provider: Any, meter_provider: Any
) -> None:
    """Named {provider}:{model} and tuned by its settings; it counts each call's final
    outcome (three attempts are one failure); once open, nothing reaches the server, and
    another model's breaker is still closed."""
    client = make_async()
    server.fail(500, times=6)
    breaker = {
        "minimum_calls": 2,
        "failure_rate": 0.5,
        "open_duration": "1m",
        "breakers": {"openai:other-model": {"minimum_calls": 100}},
    }
    app = chat_app(client)
    async with installed(app, tracer_provider, meter_provider, resilience=breaker) as http:
        for _ in range(2):
            assert (await http.get("/ask")).json() == {"error": 500}
        assert len(server.received()) == 6
        refused = await http.get("/ask")
        assert refused.status_code == 503
        assert "openai:gpt-test" in refused.text
        assert len(server.received()) == 6
        assert (await http.get("/ask", params={"model": "other-model"})).status_code == 200
    assert len(server.received()) == 7


# -- nesting, content ------------------------------------------------------------------------


async def test_calls_nest_under_the_request_span_of_an_installed_app(
    make_async: Any,
    server: OpenAIServer,
    tracer_provider: Any,
    meter_provider: Any,
    span_exporter: InMemorySpanExporter,
) -> None:
    """On the providers given to install(), one span per call, children of GET /ask."""
    app = chat_app(make_async())
    async with installed(app, tracer_provider, meter_provider) as http:
        assert (await http.get("/ask")).status_code == 200
    spans = span_exporter.get_finished_spans()
    [request] = [span for span in spans if span.name == "GET /ask"]
    [chat] = spans_named(span_exporter, "chat ")
    assert chat.parent is not None
    assert chat.parent.span_id == request.context.span_id
    assert len(spans) == 2


async def test_content_is_not_recorded_unless_opted_in(
    make_async: Any,
    server: OpenAIServer,
    tracer_provider: Any,
    meter_provider: Any,
    span_exporter: InMemorySpanExporter,
) -> None:
    client = make_async()
    for environ, recorded in [
        ({}, False),
        ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"}, True),
    ]:
        span_exporter.clear()
        recording(tracer_provider, meter_provider, **environ)
        server.script(Reply("secret answer"), Reply("streamed secret"))
        await client.chat.completions.create(model="m", messages=USER)
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        _ = [chunk async for chunk in stream]
        for span in span_exporter.get_finished_spans():
            text = str(attributes(span))
            assert ("capital of France" in text) is recorded
            assert ("secret" in text) is recorded


# -- embeddings, cached per text ---------------------------------------------------------------


async def test_embeddings_are_cached_per_text_and_keep_the_sdks_shape(
    agents: AgentTelemetry,
    make_async: Any,
    server: OpenAIServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    """A repeated text is sent once; a text embedded before is not sent again; the answer
    has one item per input, in order, with the vectors the server gives each text."""
    client = make_async(embeddings_ttl="1h")
    first = await client.embeddings.create(model="emb", input=["a", "b c", "a"])
    assert [r.body["input"] for r in server.received("/v1/embeddings")] == [["a", "b c"]]
    assert isinstance(first, openai.types.CreateEmbeddingResponse)
    assert [item.index for item in first.data] == [0, 1, 2]
    for item, text in zip(first.data, ["a", "b c", "a"], strict=True):
        assert item.embedding == pytest.approx(embedding(text, server.dimensions), rel=1e-6)
    assert first.usage.prompt_tokens == 3
    assert first.model == "emb"

    again = await client.embeddings.create(model="emb", input=["b c", "d"])
    assert [r.body["input"] for r in server.received("/v1/embeddings")][1:] == [["d"]]
    assert again.data[0].embedding == first.data[1].embedding
    assert again.usage.prompt_tokens == 1

    cached = await client.embeddings.create(model="emb", input="a")
    assert len(server.received("/v1/embeddings")) == 2
    assert cached.usage.prompt_tokens == 0
    assert cached.data[0].embedding == first.data[0].embedding
    assert len(spans_named(span_exporter, "embeddings ")) == 2  # one per request sent

    other_size = await client.embeddings.create(model="emb", input=["a"], dimensions=4)
    assert len(other_size.data[0].embedding) == 4  # the size is part of the key
    assert len(server.received("/v1/embeddings")) == 3


async def test_embeddings_are_sent_every_time_unless_the_app_opts_in(
    agents: AgentTelemetry, make_async: Any, server: OpenAIServer
) -> None:
    client = make_async()
    await client.embeddings.create(model="emb", input=["a"])
    await client.embeddings.create(model="emb", input=["a"])
    assert len(server.received("/v1/embeddings")) == 2


async def test_cached_embeddings_under_install_use_the_apps_cache_and_nest(
    make_async: Any,
    server: OpenAIServer,
    tracer_provider: Any,
    meter_provider: Any,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    app = chat_app(make_async(embeddings_ttl="1h"))
    async with installed(app, tracer_provider, meter_provider) as http:
        assert (await http.get("/embed", params={"texts": "x,y"})).json() == {"dimensions": [8, 8]}
        assert (await http.get("/embed", params={"texts": "y,x"})).json() == {"dimensions": [8, 8]}
    assert len(server.received("/v1/embeddings")) == 1
    [request, _] = [
        span for span in span_exporter.get_finished_spans() if span.name == "GET /embed"
    ]
    [sent] = spans_named(span_exporter, "embeddings ")
    assert sent.parent is not None
    assert sent.parent.span_id == request.context.span_id
    # The second request, wholly from the cache, spared the call and its texts' tokens.
    saved = {"toolkit__cache__name": "embeddings", "gen_ai__request__model": "emb"}
    assert counter_value(metric_reader, names.CACHE_SAVED_CALLS, **saved) == 1
    spent = sent.attributes["gen_ai.usage.input_tokens"]
    assert counter_value(metric_reader, names.CACHE_SAVED_TOKENS, **saved) == spent > 0


# -- the hook ----------------------------------------------------------------------------------


async def test_instrument_is_idempotent_reversible_and_follows_copies(
    agents: AgentTelemetry, server: OpenAIServer, span_exporter: InMemorySpanExporter
) -> None:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k")
    bare_create = client.chat.completions.create
    assert instrument(client) is client
    wrapped = client.chat.completions.create
    assert instrument(client).chat.completions.create is wrapped  # never wrapped twice
    copy = client.with_options(timeout=5)
    assert is_instrumented(copy)
    await copy.chat.completions.create(model="m", messages=USER)
    assert len(span_exporter.get_finished_spans()) == 1
    uninstrument(client)
    assert not is_instrumented(client)
    assert client.chat.completions.create == bare_create
    await client.chat.completions.create(model="m", messages=USER)
    assert len(span_exporter.get_finished_spans()) == 1
    await client.close()


async def test_raw_response_calls_pass_through_unrecorded(
    agents: AgentTelemetry,
    make_async: Any,
    server: OpenAIServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    raw = await make_async().chat.completions.with_raw_response.create(model="m", messages=USER)
    assert raw.parse().choices[0].message.content == "Hello from the test server."
    assert span_exporter.get_finished_spans() == ()


def test_install_applies_the_plugin_and_says_so(
    tracer_provider: Any, meter_provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "toolkit.plugins")
    installed = toolkit.install(
        FastAPI(), tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    assert "openai" in installed.plugins.plugins
    assert any("toolkit plugin openai applied (openai" in r.getMessage() for r in caplog.records)


def test_the_plugin_does_nothing_with_one_log_line_when_openai_is_absent() -> None:
    """A process where ``import openai`` fails, as where it is not installed (the other
    plugins switched off: a framework of theirs may need openai)."""
    others = sorted({e.name for e in entry_points(group=PLUGIN_GROUP)} - {"openai"})
    script = textwrap.dedent(
        """
        import logging, sys
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name == "openai" or name.startswith("openai."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Blocker())
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        from fastapi import FastAPI
        import toolkit
        installed = toolkit.install(FastAPI())
        print("applied:", "openai" in installed.plugins.plugins)
        print("imported:", "openai" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "TOOLKIT_TELEMETRY__PROMETHEUS": "false",
            "TOOLKIT_PLUGINS__DISABLED": json.dumps(others),
        },
        check=True,
    )
    assert done.stdout.splitlines() == ["applied: False", "imported: False"]
    lines = [line for line in done.stderr.splitlines() if "plugin openai" in line]
    assert lines == ["toolkit.plugins: toolkit plugin openai does nothing: openai is not installed"]


# -- the Responses API -------------------------------------------------------------------------


async def test_a_responses_api_call_is_recorded_streamed_or_not(
    agents: AgentTelemetry,
    make_async: Any,
    server: OpenAIServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    """Usage (with its cached part), the answering model and the status as finish reason;
    a stream's from its last event."""
    client = make_async()
    server.script(Reply("Paris", usage=Usage(6, 1, cached_tokens=2), model="gpt-r-1"))
    answer = await client.responses.create(model="gpt-r", input="Capital of France?")
    assert answer.output_text == "Paris"
    server.script(Reply("Paris is", usage=Usage(6, 2)))
    stream = await client.responses.create(model="gpt-r", input="Capital?", stream=True)
    assert [event.type async for event in stream][-1] == "response.completed"
    plain, streamed = span_exporter.get_finished_spans()
    assert plain.name == "chat gpt-r"
    assert {
        k: attributes(plain)[k]
        for k in (
            "gen_ai.response.model",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.response.finish_reasons",
        )
    } == {
        "gen_ai.response.model": "gpt-r-1",
        "gen_ai.usage.input_tokens": 6,
        "gen_ai.usage.output_tokens": 1,
        "gen_ai.usage.cache_read.input_tokens": 2,
        "gen_ai.response.finish_reasons": ("completed",),
    }
    assert attributes(streamed)["gen_ai.usage.output_tokens"] == 2
    assert attributes(streamed)["gen_ai.request.stream"] is True


# -- inside the app's own llm_call --------------------------------------------------------------


def token_sums(reader: InMemoryMetricReader) -> dict[str, float]:
    sums: dict[str, float] = {}
    for point in histogram(reader, "gen_ai.client.token.usage"):
        kind = point.attributes["gen_ai.token.type"]
        sums[kind] = sums.get(kind, 0) + point.sum
    return sums


async def test_an_instrumented_stream_inside_the_apps_llm_call_is_one_call_filled_by_the_plugin(
    agents: AgentTelemetry,
    make_async: Any,
    server: OpenAIServer,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    """The app's ``llm_call`` hands over the instrumented client's stream: one ``chat`` span
    and one duration point, not two; what the plugin read from the chunks (usage, finish
    reasons, answering model) and the client's server fill in what the app did not say."""
    server.script(Reply(WORDS, usage=Usage(7, 8), model="gpt-test-0801"))
    client = make_async()

    async def answer() -> Any:
        async with toolkit.llm_call("gpt-test", provider="openai") as call:
            stream = await client.chat.completions.create(
                model="gpt-test", messages=USER, stream=True, stream_options={"include_usage": True}
            )
            return call.stream(stream)

    text = "".join([c.choices[0].delta.content or "" async for c in await answer() if c.choices])
    assert text == WORDS
    [span] = spans_named(span_exporter, "chat ")
    values = attributes(span)
    assert (values["gen_ai.usage.input_tokens"], values["gen_ai.usage.output_tokens"]) == (7, 8)
    assert values["gen_ai.response.finish_reasons"] == ("stop",)
    assert values["gen_ai.response.model"] == "gpt-test-0801"
    assert (values["server.address"], values["server.port"]) == ("127.0.0.1", server.port)
    assert values["gen_ai.request.stream"] is True
    [duration] = points(metric_reader, "gen_ai.client.operation.duration")
    assert duration.count == 1
    assert duration.attributes["server.port"] == server.port
    assert token_sums(metric_reader) == {"input": 7, "output": 8}
    [first] = points(metric_reader, "gen_ai.client.operation.time_to_first_chunk")
    assert first.count == 1


async def test_a_call_made_as_the_apps_stream_is_first_read_records_onto_that_stream(
    agents: AgentTelemetry,
    make_async: Any,
    server: OpenAIServer,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    """The app's stream is a generator that calls the client when first read (after the
    ``llm_call`` block ended): still one span and one set of points."""
    server.script(Reply("a b c", usage=Usage(4, 3)))
    client = make_async()

    async def words() -> AsyncIterator[str]:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    async with toolkit.llm_call("gpt-test", provider="openai") as call:
        streamed = call.stream(words())
    assert "".join([word async for word in streamed]) == "a b c"
    [span] = spans_named(span_exporter, "chat ")
    assert attributes(span)["gen_ai.usage.output_tokens"] == 3
    assert len(points(metric_reader, "gen_ai.client.operation.duration")) == 1
    assert token_sums(metric_reader) == {"input": 4, "output": 3}


def test_what_the_app_told_its_call_wins_over_what_the_plugin_read(
    agents: AgentTelemetry,
    sync_client: openai.OpenAI,
    server: OpenAIServer,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    """A sync, unstreamed call inside the app's own: the app's usage and server are kept,
    the rest (finish reasons, response id) comes from the plugin."""
    server.script(Reply("Paris", usage=Usage(12, 1)))
    with toolkit.llm_call(
        "gpt-test", provider="openai", server_address="models.internal", server_port=443
    ) as call:
        answer = sync_client.chat.completions.create(model="gpt-test", messages=USER)
        call.usage(input_tokens=20, output_tokens=2)
    assert answer.choices[0].message.content == "Paris"
    [span] = span_exporter.get_finished_spans()
    values = attributes(span)
    assert (values["gen_ai.usage.input_tokens"], values["gen_ai.usage.output_tokens"]) == (20, 2)
    assert (values["server.address"], values["server.port"]) == ("models.internal", 443)
    assert values["gen_ai.response.finish_reasons"] == ("stop",)
    assert values["gen_ai.response.id"] == answer.id
    assert token_sums(metric_reader) == {"input": 20, "output": 2}


async def test_an_embeddings_call_inside_a_chat_call_is_a_call_of_its_own(
    agents: AgentTelemetry,
    make_async: Any,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    """Only a call of the same operation records onto the open one: an embeddings request
    made while a chat call is open is its own span, under the chat call's."""
    client = make_async()
    with toolkit.llm_call("gpt-test", provider="openai") as call:
        await client.embeddings.create(model="emb", input=["a text"])
        call.usage(input_tokens=3, output_tokens=1)
    embeddings, chat = span_exporter.get_finished_spans()
    assert (embeddings.name, chat.name) == ("embeddings emb", "chat gpt-test")
    assert embeddings.parent is not None
    assert embeddings.parent.span_id == chat.context.span_id
    assert len(points(metric_reader, "gen_ai.client.operation.duration")) == 2
