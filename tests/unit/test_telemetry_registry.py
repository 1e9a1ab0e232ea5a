"""The name registry, checked both ways against what the toolkit really emits."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, Histogram, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import toolkit
import toolkit.pipelines.offloading._decorator
from tests.support.durable import drive_durable
from tests.support.otel import metric_names, metric_streams, points
from tests.support.servers import free_port
from tests.support.waiting import eventually
from toolkit.agents import AgentTelemetry, set_current_agent_telemetry
from toolkit.cache import cached_response, set_current_cache
from toolkit.pipelines.deferred._background import set_current_runner
from toolkit.pipelines.deferred._in_process import InProcessRunner
from toolkit.pipelines.deferred._journal import Journal
from toolkit.resilience import BreakerRegistry, RetryPolicy, set_current_breakers
from toolkit.settings import AgentSettings, DeferSettings
from toolkit.telemetry import names
from toolkit.telemetry.metric import COUNTER, OBSERVABLE_COUNTER, Metric


@toolkit.cached(ttl="1m", tags=["answers"], namespace="registry")
async def classify(text: str) -> str:
    return text.upper()


pytestmark = pytest.mark.anyio

DECLARED_ATTRIBUTES = {
    value
    for name, value in vars(names).items()
    if name.isupper()
    and isinstance(value, str)
    and "." in value
    and "{" not in value
    and (value not in names.METRICS or name.endswith("_ATTRIBUTE"))  # toolkit.gen_ai.cost
    and value not in names.SPAN_EVENTS
    and value != names.INSTRUMENTATION_SCOPE
}


async def drive_every_capability(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, redis_url: str | None = None
) -> toolkit.Toolkit:
    """Allowed, rejected, shadow-rejected and backend-error decisions, a 404, a 500, a flag
    flipped and evaluated, response and function cache misses and hits, an invalidation."""
    app = FastAPI()

    @app.get("/chat/{session}")
    async def chat(session: str) -> dict[str, str]:
        return {"session": session}

    @app.get("/answers/{answer_id}")
    @cached_response(ttl="1m", tags=["answers"])
    async def answer(answer_id: str) -> dict[str, str]:
        return {"answer": await classify(answer_id)}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("model failure")

    @app.get("/slow")
    async def slow() -> None:
        await asyncio.sleep(5)  # past its budget: a 504

    @app.get("/block")
    async def block() -> None:
        time.sleep(0.1)  # noqa: ASYNC251 (a blocked loop: its span, count and lag)

    down = f"redis://127.0.0.1:{free_port()}/0"
    installed = toolkit.install(
        app,
        toolkit.ToolkitSettings(
            ratelimit={
                "limit": "1/minute",
                "routes": {
                    "/block": "10/minute",
                    "/slow": "10/minute",
                    "/shadow": {"limit": "1/minute", "shadow": True},
                    "/answers/{answer_id}": "10/minute",
                },
            },
            event_loop={"blocked_threshold": "30ms"},
            deadline={"routes": {"/slow": "20ms"}},
            offload={"threads": 1, "max_waiting": 1},
        ),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    failing = FastAPI()
    failing.get("/x")(chat)
    toolkit.install(
        failing,
        toolkit.ToolkitSettings(ratelimit={"limit": "1/minute"}, backend={"url": down}),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    set_current_cache(installed.cache)  # the decorators use the first app's store
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    await installed.startup()
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ["/chat/a", "/chat/b", "/shadow", "/shadow", "/boom", "/missing", "/block"]:
            await client.get(path)
        for path in ["/answers/1", "/answers/1"]:  # a response cache miss, then a hit
            await client.get(path, headers={"x-api-key": "k"})
        await installed.store.set(toolkit.flags.RATELIMIT, "shadow", by="test")
        await installed.store.set(toolkit.flags.RATELIMIT, "on", by="test")
        await client.get("/chat/c")
        await client.get("/slow")
        await client.get("/chat/d", headers={"request-timeout": "soon"})  # ignored
    with tracer_provider.get_tracer("test").start_as_current_span("cache work"):
        await classify("1")  # a function cache hit: the route computed it
        await installed.cache.invalidate(["answers"])
    with tracer_provider.get_tracer("test").start_as_current_span("pool work"):
        await use_a_pool(tracer_provider, meter_provider)
    with tracer_provider.get_tracer("test").start_as_current_span("resilience work"):
        await drive_resilience(installed.breakers)
    with tracer_provider.get_tracer("test").start_as_current_span("pipeline work"):
        await drive_pipelines()
    assert installed.loop_monitor is not None
    await eventually(
        lambda: installed.loop_monitor is not None and installed.loop_monitor.blocked > 0
    )
    await drive_agents(tracer_provider, meter_provider)
    with tracer_provider.get_tracer("test").start_as_current_span("deferring work"):
        await drive_deferred(tracer_provider, meter_provider)
    with tracer_provider.get_tracer("test").start_as_current_span("offload work"):
        assert installed._offload is not None
        toolkit.pipelines.offloading._decorator.set_current_offload_pool(
            installed._offload
        )  # the first app's
        await drive_offload()
    if redis_url is not None:  # durable mode needs a real Redis
        with tracer_provider.get_tracer("test").start_as_current_span("durable work"):
            await drive_durable(redis_url, tracer_provider, meter_provider)
    await installed.shutdown()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=failing), base_url="http://t"
    ) as client:
        await client.get("/x")
    return installed  # alive while the caller reads its instruments (the breakers' gauge)


async def use_a_pool(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """An acquire, a wait past the threshold that times out, a full queue, an error."""
    pool: toolkit.AgentPool[list[str]] = toolkit.AgentPool(
        list, name="registry", size=1, max_waiting=0, acquire_timeout="20ms",
        wait_threshold="10ms", meter_provider=meter_provider, tracer_provider=tracer_provider,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="run failed"):  # noqa: PT012
        async with pool.acquire():
            with pytest.raises(toolkit.PoolExhaustedError):  # queue full: refused at once
                async with pool.acquire():
                    pass
            raise RuntimeError("run failed")  # the object is discarded
    waiting: toolkit.AgentPool[list[str]] = toolkit.AgentPool(
        list, name="registry", size=1, acquire_timeout="20ms", wait_threshold="10ms",
        meter_provider=meter_provider, tracer_provider=tracer_provider,
    )  # fmt: skip
    async with waiting.acquire():
        with pytest.raises(toolkit.PoolTimeoutError):  # waits past the threshold, times out
            async with waiting.acquire():
                pass

    async def slow_build() -> list[str]:
        await asyncio.sleep(10)
        return []

    building: toolkit.AgentPool[list[str]] = toolkit.AgentPool(
        slow_build, name="registry", size=1, create_timeout="20ms",
        meter_provider=meter_provider, tracer_provider=tracer_provider,
    )  # fmt: skip
    with pytest.raises(toolkit.PoolTimeoutError):  # its build passes create_timeout
        async with building.acquire():
            pass
    await pool.close()
    await waiting.close()
    await building.close()


async def drive_resilience(registry: BreakerRegistry) -> None:
    """A breaker that trips, refuses (answered by a fallback), probes and closes; a retry."""
    now = [1_700_000_000.0]
    set_current_breakers(registry)
    breaker = registry.get("llm", clock=lambda: now[0], minimum_calls=2, probes=1)
    failing = [True]

    async def no_wait(seconds: float) -> None:
        del seconds

    async def canned() -> str:
        return "canned"

    @toolkit.resilient(
        breaker="llm",
        retries=RetryPolicy(on=TimeoutError, attempts=2, sleep=no_wait),
        fallback=canned,
    )
    async def call_llm() -> str:
        if failing[0]:
            raise TimeoutError("slow model")
        return "answer"

    for _ in range(3):  # two failures (each retried once) trip it; the third is refused
        await call_llm()
    now[0] += 60
    failing[0] = False
    await call_llm()  # the probe succeeds: closed again
    assert breaker.state == "closed"

    @toolkit.resilient(
        retries=RetryPolicy(on=TimeoutError, attempts=2, sleep=no_wait),
        budget=toolkit.RetryBudget(0.0, minimum=0),
        fallback=canned,
    )
    async def call_tool() -> str:
        raise TimeoutError("slow tool")

    await call_tool()  # its retry is refused by an empty budget

    @toolkit.resilient(timeout=None)
    async def stream_llm() -> AsyncIterator[str]:
        yield "a chunk"
        raise TimeoutError("slow model")

    with pytest.raises(TimeoutError):  # a stream interrupted after its first chunk
        async for _ in stream_llm():
            pass


async def drive_pipelines() -> None:
    """A fan-out with a deadline: a branch that answers, one that falls back, one cut."""

    async def answer(value: str, delay: float) -> str:
        await asyncio.sleep(delay)
        return value

    async def fail() -> str:
        raise ConnectionError("down")

    await toolkit.gather(
        toolkit.branch("vector", answer, "v", 0),
        toolkit.branch("graph", fail, fallback="none"),
        toolkit.branch("docs", answer, "d", 5, deadline="20ms"),
        name="registry",
        deadline="1s",
    )


async def drive_deferred(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """A task done, one retried, one failed, one refused by a full queue, and the count a
    "crashed" process (this one's pid) left in the journal."""
    journal = tempfile.mkdtemp(prefix="toolkit-journal-")
    Journal(journal, "registry").write({"registry.lost": 2})
    runner = InProcessRunner(
        DeferSettings(queue_size=1, concurrency=1, handoff_timeout=0, retries=1, journal=journal),
        service="registry", tracer_provider=tracer_provider, meter_provider=meter_provider,
    )  # fmt: skip
    await runner.start()
    set_current_runner(runner)
    failures = [1]
    gate = asyncio.Event()

    @toolkit.background(
        name="registry.work",
        retries=RetryPolicy(on=RuntimeError, attempts=2, wait_initial=0, wait_jitter=0),
    )
    async def work(fail: bool) -> None:
        await gate.wait()
        if fail or failures.pop():
            raise RuntimeError("store down")

    failures.append(0)
    await work.defer(False)  # runs (and waits at the gate): the queue is empty again
    await eventually(lambda: runner.running.get("registry.work") == 1)
    await work.defer(True)  # queued: the queue is full
    with pytest.raises(toolkit.DeferRefused):
        await work.defer(False)
    gate.set()
    await runner.drain(5)
    set_current_runner(None)


async def drive_offload() -> None:
    """On the installed pool: a call that answers, one that raises, one left at its deadline
    while a second waits and is refused at it, then one refused on a full line."""
    gate = threading.Event()

    def broken() -> None:
        raise ValueError("bad row")

    await toolkit.run_sync(len, "ok")
    with pytest.raises(ValueError, match="bad row"):
        await toolkit.run_sync(broken)
    pool = toolkit.pipelines.offloading._decorator.current_offload_pool()
    with toolkit.deadline(0.05):
        running = asyncio.create_task(toolkit.run_sync(gate.wait, 5))
        await eventually(lambda: pool.running == pool.settings.threads)
        with pytest.raises(toolkit.DeadlineExceeded):
            await toolkit.run_sync(gate.wait, 5)  # waits for a thread past the deadline
        with pytest.raises(toolkit.DeadlineExceeded):
            await running  # left running at the deadline
    waiting = asyncio.create_task(toolkit.run_sync(gate.wait, 5))  # the abandoned one runs
    await eventually(lambda: pool.waiting == 1)
    with pytest.raises(toolkit.PoolExhaustedError):
        await toolkit.run_sync(gate.wait, 5)
    gate.set()
    assert await waiting is True
    await eventually(lambda: pool.running == 0)


async def drive_agents(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """An agent with a step, a tool and a priced, streamed, captured model call inside a
    cached function computed once and hit once; a failed embeddings call."""
    set_current_agent_telemetry(
        AgentTelemetry(
            AgentSettings(prices={"gpt-4o": {"input": 2.5, "output": 10}}, capture_content=True),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
    )

    @toolkit.cached(ttl="1m", namespace="answers")
    async def ask(question: str) -> str:
        async def chunks() -> AsyncIterator[str]:
            yield "an answer"

        async with toolkit.llm_call(
            "gpt-4o", provider="openai", server_address="api.openai.com", server_port=443
        ) as call:
            call.input_messages(question)
            stream = call.stream(chunks())
        async for chunk in stream:
            call.output_messages(chunk)
            call.usage(input_tokens=12, output_tokens=3, cache_read_input_tokens=2)
            call.response(model="gpt-4o", finish_reasons=["stop"], response_id="r1")
        return "an answer"

    @toolkit.traced_agent("registry", conversation="session")
    async def agent(question: str, session: str) -> str:
        with toolkit.step("memory.m1"):
            pass
        async with toolkit.step("search", tool=True):
            pass
        with (
            pytest.raises(ConnectionError),
            toolkit.llm_call("small", provider="openai", operation="embeddings"),
        ):
            raise ConnectionError("refused")
        return await ask(question)

    await agent("why?", session="s1")
    await agent("why?", session="s1")  # a hit: the model call spared


async def test_everything_emitted_is_declared_and_everything_declared_is_emitted(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    redis_url: str,
) -> None:
    installed = await drive_every_capability(tracer_provider, meter_provider, redis_url)

    emitted_metrics = {
        metric: {key for point in points(metric_reader, metric) for key in point.attributes}
        for metric in names.METRICS
        if points(metric_reader, metric)
    }
    undeclared = [m for m in metric_names(metric_reader) if m not in names.METRICS]
    assert not undeclared, f"emitted but not in names.METRICS: {undeclared}"
    silent = [m for m in names.METRICS if m not in emitted_metrics]
    assert not silent, f"declared but never emitted: {silent}"
    for metric, keys in emitted_metrics.items():
        extra = keys - set(names.METRICS[metric])
        assert not extra, f"{metric} carries attributes outside its allowlist: {extra}"
    unlike = []
    for name, stream in metric_streams(metric_reader).items():
        record = names.METRIC_RECORDS[name]
        declared = (record.unit, record.description, record.kind.points, record.buckets)
        if as_declared(stream) != declared:
            unlike.append(f"{name}: emitted {as_declared(stream)}, declared {declared}")
    assert not unlike, "emitted otherwise than its record says:\n" + "\n".join(unlike)

    spans = span_exporter.get_finished_spans()
    events = {event.name for span in spans for event in span.events} - {"exception"}
    assert events == set(names.SPAN_EVENTS)
    used = {key for span in spans for key in span.attributes}
    used |= {key for span in spans for event in span.events for key in event.attributes}
    used -= {"exception.stacktrace", "exception.escaped"}  # the SDK's record_exception
    assert not used - DECLARED_ATTRIBUTES, f"undeclared attributes: {used - DECLARED_ATTRIBUTES}"
    decisions = {
        (point.attributes[names.CACHE_NAME], point.attributes[names.CACHE_RESULT])
        for point in points(metric_reader, names.CACHE_REQUESTS)
        if point.value
    }
    assert {("response", "miss"), ("response", "hit"), ("registry", "hit")} <= decisions
    assert installed.breakers.get("llm").state == "closed"  # kept alive for its gauge too


def as_declared(stream: Any) -> tuple[object, ...]:
    """What a collected metric says of itself: unit, description, kind and buckets."""
    data = stream.data
    if isinstance(data, Histogram):
        return stream.unit, stream.description, "histogram", data.data_points[0].explicit_bounds
    if isinstance(data, Gauge):
        return stream.unit, stream.description, "gauge", None
    kind = "counter" if data.is_monotonic else "updowncounter"
    return stream.unit, stream.description, kind, None


def test_every_metric_is_declared_once_by_name() -> None:
    """A record per name, and every record under its own name's constant."""
    records = [value for value in vars(names).values() if isinstance(value, Metric)]
    assert len(records) == len(names.METRIC_RECORDS) == len(names.METRICS)
    for constant, value in vars(names).items():
        if isinstance(value, Metric):
            assert getattr(names, constant.removesuffix("_METRIC")) == value.name, constant


def test_a_record_creates_what_its_kind_says_and_refuses_the_wrong_callbacks(
    meter_provider: MeterProvider,
) -> None:
    meter = meter_provider.get_meter("test")
    counter = Metric("test.sync", COUNTER, "{thing}", "Things.", ())
    counter.create(meter).add(1)
    with pytest.raises(TypeError, match=r"test.sync \(create_counter\) takes no callbacks"):
        counter.create(meter, [lambda options: []])
    observed = Metric("test.observed", OBSERVABLE_COUNTER, "{thing}", "Things.", ())
    with pytest.raises(TypeError, match="takes the callbacks that report it"):
        observed.create(meter)
    with pytest.raises(ValueError, match="buckets are for histograms"):
        Metric("test.bucketed", COUNTER, "{thing}", "Things.", (), buckets=(1.0,))


def test_the_names_before_the_records_still_answer_with_a_warning(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """``create_<metric>`` factories and ``<METRIC>_ATTRIBUTES`` tuples are deprecated."""
    meter = meter_provider.get_meter("test")
    with pytest.warns(DeprecationWarning, match=r"use names.BACKEND_ERRORS_METRIC.create\(meter\)"):
        names.create_backend_errors(meter).add(1, {names.BACKEND_NAME: "memory"})
    with pytest.warns(DeprecationWarning, match="CACHE_ENTRIES_METRIC.create"):
        factory = names.create_cache_entries
    factory(meter, lambda options: [Observation(3, {names.CACHE_BACKEND: "memory"})])
    assert [p.value for p in points(metric_reader, names.CACHE_ENTRIES)] == [3]
    assert points(metric_reader, names.BACKEND_ERRORS)[0].value == 1
    with pytest.warns(DeprecationWarning, match="RATE_LIMIT_REQUESTS_METRIC.attributes"):
        assert names.RATE_LIMIT_REQUESTS_ATTRIBUTES == (
            names.RATE_LIMIT_POLICY,
            names.RATE_LIMIT_RESULT,
        )
    with pytest.warns(DeprecationWarning, match="POOL_WAIT_TIME_METRIC.attributes"):
        assert names.POOL_NAME_ATTRIBUTES == (names.POOL_NAME,)
    with pytest.raises(AttributeError, match="create_nothing"):
        names.create_nothing  # noqa: B018
