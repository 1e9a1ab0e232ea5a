"""What a traced OpenAI chat call costs on top of the bare SDK call, the toolkit's plugin
against OpenLLMetry's instrumentor on the same call in the same run:
``python -m tests.benchmarks.llm_overhead``.

Each call is the real ``openai.AsyncOpenAI`` stack (request building, its HTTP client,
response parsing) on one uvloop loop, two ways:

* ``loopback``: the local OpenAI-compatible server of the tests (``tests/support/
  openai_server.py``, uvicorn in a thread) on 127.0.0.1, its round trip included;
* ``in-process``: the HTTP client's mock transport answering the bytes that server answered
  to the same request: no socket and no server work, so a few microseconds added by a
  configuration stand out of less noise.

The configurations, every traced one on providers of the same kind, made fresh for each of
its batches (an SDK ``TracerProvider`` whose spans are batched then discarded, an SDK
``MeterProvider`` with an in-memory reader); none sets a global provider (checked):

* ``bare`` (the anchor): the SDK call alone;
* ``bare-span`` (the second anchor): the SDK call inside a bare
  ``tracer.start_as_current_span`` on the batch's tracer provider: what one recording
  OpenTelemetry span costs on this call, against which the toolkit's own work is read;
* ``bare-sdk`` (the third anchor): the SDK call inside what the GenAI conventions ask of
  OpenTelemetry for it, made by hand on the batch's providers: the CLIENT span with the
  request's and the answer's attributes, the duration point and the two token points (each
  recorded at once, with the attributes the toolkit gives them). Nothing can record the call
  to the conventions for less: the toolkit's own work is read against it;
* ``llm-call``: the SDK call of a bare client inside ``toolkit.llm_call``, told what the
  plugin tells it (the answering model, its id, the finish reasons, the usage): the recorder
  without the plugin around it;
* ``toolkit``: ``toolkit_openai.instrument(client, breakers=False, retries=None,
  timeout=None)``: the span and the GenAI metrics (duration, tokens, cost), like for like
  with OpenLLMetry;
* ``toolkit-guarded``: ``instrument(client)`` as documented: also a breaker per model and the
  toolkit's retry policy around each call;
* ``openllmetry``: ``OpenAIInstrumentor().instrument(tracer_provider=..., meter_provider=...)``
  of ``opentelemetry-instrumentation-openai`` (traceloop) at its defaults, which put the
  prompt and the answer on the span;
* ``openllmetry-no-content``: the same with ``TRACELOOP_TRACE_CONTENT=false``, as the toolkit
  records by default (no content).

OpenLLMetry patches the SDK's classes, so it is instrumented around its own batches only and
its patches are taken off after each (its ``uninstrument()`` leaves them on: see
``_unpatch_sdk``); every batch of another configuration first checks that none is left.

The machine is shared: rounds are interleaved (each round one batch of ``--batch`` calls per
configuration, in turn), and what a configuration adds is read against ``bare`` of the same
round, in CPU time of the calling thread (``time.thread_time``: time spent waiting for a
CPU, or in the server's thread, is not in it; the elapsed time per call is shown beside it).
The figure is the median over rounds of that difference, per call; the ratio is of the
medians. OpenLIT is not measured: its releases require ``openai<3``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib.metadata import version
from typing import Any

import httpx2
import openai
import uvloop
import wrapt
from opentelemetry.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind

import toolkit
import toolkit_openai
from tests.benchmarks.apps import discarding_tracer_provider, global_providers_set
from tests.support.openai_server import OpenAIServer, Reply, Usage
from toolkit.agents import AgentTelemetry, set_current_agent_telemetry
from toolkit.settings import AgentSettings
from toolkit.telemetry import names

TARGET_US = 20.0
"""The promise (issue 10): a traced model call adds under 20 µs, with a recording span. The
SDK alone spends more on the span and points the conventions require, so the toolkit's own
work is read against ``bare-sdk`` (docs/design-notes.md explains)."""
MODEL = "gpt-4o"
PRICES = {MODEL: {"input": 2.5, "output": 10.0}}
MESSAGES = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "What is the capital of France?"},
]
TRANSPORTS = ("in-process", "loopback")
CONFIGURATIONS = (
    "bare",
    "bare-span",
    "bare-sdk",
    "llm-call",
    "toolkit",
    "toolkit-guarded",
    "openllmetry",
    "openllmetry-no-content",
)
CONTENT_SWITCH = "TRACELOOP_TRACE_CONTENT"


class CountingProcessor(SpanProcessor):
    """Counts the spans that ended: proof that a traced configuration recorded its calls."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


@dataclass
class Providers:
    """One batch's providers: spans batched then discarded (and counted), metrics aggregated."""

    tracer_provider: TracerProvider = field(default_factory=discarding_tracer_provider)
    meter_provider: MeterProvider = field(
        default_factory=lambda: MeterProvider(metric_readers=[InMemoryMetricReader()])
    )
    spans: CountingProcessor = field(default_factory=CountingProcessor)

    def __post_init__(self) -> None:
        self.tracer_provider.add_span_processor(self.spans)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _patched_methods() -> Iterator[tuple[type, str, wrapt.BaseObjectProxy]]:
    """Every method of the SDK's classes replaced by a wrapt proxy (OpenLLMetry's patches;
    neither the SDK nor the toolkit's plugin uses any)."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("openai.") or module is None:
            continue
        for owner in list(vars(module).values()):
            if isinstance(owner, type) and owner.__module__ == name:
                for attribute, value in list(vars(owner).items()):
                    if isinstance(value, wrapt.BaseObjectProxy):
                        yield owner, attribute, value


def _sdk_patched() -> bool:
    return next(_patched_methods(), None) is not None


def _unpatch_sdk() -> None:
    """Put the SDK's own methods back. ``OpenAIInstrumentor().uninstrument()`` does not (0.62):
    it calls ``unwrap("openai.resources.chat.completions", "AsyncCompletions.create")``, which
    looks for an attribute named ``"AsyncCompletions.create"`` on that module, finds none,
    and leaves the wrapper in place."""
    for owner, attribute, proxy in list(_patched_methods()):
        original = proxy
        while isinstance(original, wrapt.BaseObjectProxy):
            original = original.__wrapped__
        setattr(owner, attribute, original)


def _mock_client(server: OpenAIServer) -> openai.AsyncOpenAI:
    """A client whose transport answers, without a socket, what the server answered."""
    body = {"model": MODEL, "messages": MESSAGES}
    answer = httpx2.post(f"{server.base_url}/chat/completions", json=body).raise_for_status()
    content, headers = answer.content, {"content-type": answer.headers["content-type"]}

    def respond(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=content, headers=headers)

    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(respond))
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="bench", http_client=http_client)


def _client(server: OpenAIServer, transport: str, configuration: str) -> openai.AsyncOpenAI:
    if transport == "loopback":
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="bench")
    else:
        client = _mock_client(server)
    if configuration == "toolkit":
        toolkit_openai.instrument(client, breakers=False, retries=None, timeout=None)
    elif configuration == "toolkit-guarded":
        toolkit_openai.instrument(client)
    return client


def _by_hand(
    create: Callable[..., Awaitable[Any]], providers: Providers, port: int
) -> Callable[..., Awaitable[Any]]:
    """The ``bare-sdk`` anchor: the span and the points of the conventions, by hand."""
    tracer = providers.tracer_provider.get_tracer("bench")
    meter = providers.meter_provider.get_meter("bench")
    duration = names.GEN_AI_CLIENT_OPERATION_DURATION_METRIC.create(meter)
    tokens = names.GEN_AI_CLIENT_TOKEN_USAGE_METRIC.create(meter)
    request = {
        names.GEN_AI_OPERATION_NAME: "chat",
        names.GEN_AI_PROVIDER_NAME: "openai",
        names.GEN_AI_REQUEST_MODEL: MODEL,
        names.SERVER_ADDRESS: "127.0.0.1",
        names.SERVER_PORT: port,
    }

    async def recorded(**kwargs: Any) -> Any:
        started = time.perf_counter()
        with tracer.start_as_current_span(
            f"chat {MODEL}", kind=SpanKind.CLIENT, attributes=request
        ) as span:
            answer = await create(**kwargs)
            usage = answer.usage
            span.set_attributes(
                {
                    names.GEN_AI_RESPONSE_MODEL: answer.model,
                    names.GEN_AI_RESPONSE_ID: answer.id,
                    names.GEN_AI_RESPONSE_FINISH_REASONS: [c.finish_reason for c in answer.choices],
                    names.GEN_AI_USAGE_INPUT_TOKENS: usage.prompt_tokens,
                    names.GEN_AI_USAGE_OUTPUT_TOKENS: usage.completion_tokens,
                }
            )
        series = {**request, names.GEN_AI_RESPONSE_MODEL: answer.model}
        duration.record(time.perf_counter() - started, series)
        for count, kind in (
            (usage.prompt_tokens, names.GEN_AI_TOKEN_INPUT),
            (usage.completion_tokens, names.GEN_AI_TOKEN_OUTPUT),
        ):
            tokens.record(count, {**series, names.GEN_AI_TOKEN_TYPE: kind})
        return answer

    return recorded


@dataclass(frozen=True)
class Timing:
    """Seconds per call: elapsed, and CPU of the calling thread (what the loop spent on it;
    on a shared machine, waiting for a CPU counts in the first, not in the second)."""

    wall: float
    cpu: float


class Contender:
    """One configuration on one transport: its client, and how a batch of it is run."""

    def __init__(self, server: OpenAIServer, transport: str, configuration: str) -> None:
        self.server = server
        self.transport = transport
        self.configuration = configuration
        self.client = _client(server, transport, configuration)
        self.per_call: list[Timing] = []
        self.spans = 0

    def _create(self, providers: Providers) -> Callable[..., Awaitable[Any]]:
        """What one call of this configuration awaits."""
        create = self.client.chat.completions.create
        if self.configuration == "bare-span":
            tracer = providers.tracer_provider.get_tracer("bench")

            async def in_span(**kwargs: Any) -> Any:
                with tracer.start_as_current_span(f"chat {MODEL}", kind=SpanKind.CLIENT):
                    return await create(**kwargs)

            return in_span
        if self.configuration == "bare-sdk":
            return _by_hand(create, providers, self.server.port)
        if self.configuration == "llm-call":
            port = self.server.port

            async def recorded(**kwargs: Any) -> Any:
                with toolkit.llm_call(
                    MODEL, provider="openai", server_address="127.0.0.1", server_port=port
                ) as call:
                    answer = await create(**kwargs)
                    call.response(
                        model=answer.model,
                        finish_reasons=[choice.finish_reason for choice in answer.choices],
                        response_id=answer.id,
                    )
                    call.usage(
                        input_tokens=answer.usage.prompt_tokens,
                        output_tokens=answer.usage.completion_tokens,
                    )
                    return answer

            return recorded
        return create

    def batch(self, loop: asyncio.AbstractEventLoop, calls: int) -> Timing:
        """Per call over ``calls`` calls, with this configuration's providers made
        and its instrumentation applied before, and undone after, the timed part."""
        if _sdk_patched():
            raise RuntimeError("the SDK is still patched by an earlier batch")
        providers = Providers()
        set_current_agent_telemetry(
            AgentTelemetry(
                AgentSettings.model_validate({"prices": PRICES}),
                tracer_provider=providers.tracer_provider,
                meter_provider=providers.meter_provider,
            )
        )
        instrumentor = None
        if self.configuration.startswith("openllmetry"):
            if self.configuration == "openllmetry-no-content":
                os.environ[CONTENT_SWITCH] = "false"
            instrumentor = OpenAIInstrumentor()
            instrumentor.instrument(
                tracer_provider=providers.tracer_provider,
                meter_provider=providers.meter_provider,
            )
        create = self._create(providers)
        server = self.server

        async def run() -> Timing:
            server.reset()  # it keeps every request it received
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                answer = await create(model=MODEL, messages=MESSAGES)
                if answer.choices[0].message.content != "Paris":
                    raise RuntimeError(f"unexpected answer: {answer}")
            return Timing((time.perf_counter() - wall) / calls, (time.thread_time() - cpu) / calls)

        try:
            return loop.run_until_complete(run())
        finally:
            if instrumentor is not None:
                instrumentor.uninstrument()
                _unpatch_sdk()
            os.environ.pop(CONTENT_SWITCH, None)
            set_current_agent_telemetry(None)
            providers.tracer_provider.force_flush()
            self.spans += providers.spans.ended
            providers.shutdown()


@dataclass(frozen=True)
class Row:
    transport: str
    configuration: str
    wall_us: float
    cpu_us: float
    added_us: float
    added_range: tuple[float, float]
    ratio: float


def measure(args: argparse.Namespace) -> list[Row]:
    loop = uvloop.new_event_loop()
    rows: list[Row] = []
    with OpenAIServer(default=Reply("Paris", usage=Usage(24, 1))) as server:
        contenders = [
            Contender(server, transport, configuration)
            for transport in args.transports
            for configuration in CONFIGURATIONS
        ]
        for contender in contenders:  # warm-up: first connections, imports, caches
            contender.batch(loop, max(args.batch // 4, 1))
            contender.spans = 0
        for _ in range(args.rounds):
            for contender in contenders:
                contender.per_call.append(contender.batch(loop, args.batch))
        for contender in contenders:
            loop.run_until_complete(contender.client.close())
            traced = contender.configuration != "bare"
            if (contender.spans >= args.rounds * args.batch) != traced:
                raise RuntimeError(f"{contender.configuration}: {contender.spans} spans recorded")
    loop.close()
    if global_providers_set():
        raise RuntimeError("a configuration set a global OpenTelemetry provider")
    for transport in args.transports:
        of_transport = [c for c in contenders if c.transport == transport]
        bare = of_transport[0].per_call
        for contender in of_transport:
            mine = contender.per_call
            added = [1e6 * (m.cpu - b.cpu) for m, b in zip(mine, bare, strict=True)]
            cpu = statistics.median(m.cpu for m in mine)
            rows.append(
                Row(
                    transport,
                    contender.configuration,
                    wall_us=1e6 * statistics.median(m.wall for m in mine),
                    cpu_us=1e6 * cpu,
                    added_us=statistics.median(added),
                    added_range=(min(added), max(added)),
                    ratio=cpu / statistics.median(b.cpu for b in bare),
                )
            )
    return rows


def report(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"# Traced OpenAI chat call, {date.today()}, Python {platform.python_version()}, "
        f"openai {version('openai')}, opentelemetry-sdk {version('opentelemetry-sdk')}, "
        f"opentelemetry-instrumentation-openai "
        f"{version('opentelemetry-instrumentation-openai')}; {args.rounds} rounds of "
        f"{args.batch} calls per configuration, interleaved; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; target: the toolkit adds under "
        f"{TARGET_US:g} µs a call",
        "",
        "| transport | configuration | elapsed a call | CPU a call | CPU added vs bare "
        "| added, range over rounds | CPU vs bare |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        low, high = row.added_range
        added = "anchor" if row.configuration == "bare" else f"{row.added_us:+.1f} µs"
        spread = "-" if row.configuration == "bare" else f"{low:+.0f} to {high:+.0f} µs"
        lines.append(
            f"| {row.transport} | {row.configuration} | {row.wall_us:,.0f} µs "
            f"| {row.cpu_us:,.1f} µs | {added} "
            f"| {spread} | {row.ratio:.3f} |"
        )
    lines.append("")
    by = {(row.transport, row.configuration): row for row in rows}
    for transport in args.transports:
        toolkit, theirs = by[(transport, "toolkit")], by[(transport, "openllmetry-no-content")]
        span, floor = by[(transport, "bare-span")], by[(transport, "bare-sdk")]
        own = toolkit.added_us - floor.added_us
        versus = theirs.added_us / toolkit.added_us if toolkit.added_us > 0 else float("inf")
        lines.append(
            f"{transport}: the toolkit adds {toolkit.added_us:.1f} µs a call in all "
            f"({_verdict(toolkit.added_us)}), {toolkit.added_us - span.added_us:.1f} µs over a "
            f"bare span ({span.added_us:.1f} µs alone); the conventions' span and points made "
            f"by hand add {floor.added_us:.1f} µs, so the toolkit's own work is {own:.1f} µs "
            f"({_verdict(own)}); OpenLLMetry without content adds {theirs.added_us:.1f} µs "
            f"({versus:.1f}x the toolkit's)"
        )
    return "\n".join(lines)


def _verdict(added_us: float) -> str:
    return f"under {TARGET_US:g} µs: {'met' if added_us < TARGET_US else 'NOT MET'}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=200, help="calls per batch")
    parser.add_argument("--rounds", type=int, default=15, help="batches per configuration")
    parser.add_argument(
        "--transports",
        type=lambda value: [t for t in value.split(",") if t],
        default=list(TRANSPORTS),
        help=f"comma-separated, of {','.join(TRANSPORTS)}",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = set(args.transports) - set(TRANSPORTS)
    if unknown:
        raise SystemExit(f"unknown transports: {', '.join(sorted(unknown))}")
    print(report(measure(args), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
