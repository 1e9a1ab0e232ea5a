"""The status board without a collector: the tail-sampled trace buffer and its bounds, the
in-process percentiles, the agent and model figures from GenAI spans, the providers they ride
on, and the status page, ``/stats`` and the admin roles against real traffic."""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
import tracemalloc
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

import toolkit
from tests.apps.status import (
    AGENT,
    BLOCK_SECONDS,
    BLOCKING_CALL,
    COST,
    INPUT_TOKENS,
    MODEL,
    OUTPUT_TOKENS,
    status_app,
)
from tests.support.asgi import serving
from tests.support.waiting import eventually_returns
from tests.unit.test_admin import assert_problem, basic, bearer
from toolkit import ToolkitSettings
from toolkit.admin import MAX_STATS_TRACES
from toolkit.errors import ConfigurationError
from toolkit.telemetry import names
from toolkit.telemetry._loop_report import OFFLOAD_HINT, BlockedLoop
from toolkit.telemetry._loop_stack import StackFrame
from toolkit.telemetry.agent_stats import AgentStats
from toolkit.telemetry.latency import GAMMA, LatencyTable
from toolkit.telemetry.trace_buffer import OTHER_ROUTE, PENDING_TRACES, TraceBuffer

OPS_TOKEN = secrets.token_urlsafe(24)
VIEWER_TOKEN = secrets.token_urlsafe(24)
OPS = bearer(OPS_TOKEN)
VIEWER = bearer(VIEWER_TOKEN)
JSON = {"content-type": "application/json"}
MS = 1_000_000  # nanoseconds


# --- the trace buffer --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def traced(buffer: TraceBuffer) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(buffer)
    return provider.get_tracer("test")


def request(
    tracer: trace.Tracer,
    route: str,
    milliseconds: float,
    *,
    failed: bool = False,
    children: int = 3,
    padding: int = 100,
) -> str:
    """One request's trace: a SERVER span of ``milliseconds`` with ``children`` spans under
    it, each carrying ``padding`` characters; its trace id."""
    start = 1_000 * MS
    root = tracer.start_span(route, kind=SpanKind.SERVER, start_time=start)
    context = trace.set_span_in_context(root)
    for i in range(children):
        child = tracer.start_span(f"step {i}", context=context, start_time=start + i * MS)
        child.set_attribute("detail", "x" * padding)
        child.end(end_time=start + (i + 1) * MS)
    if failed:
        root.set_status(Status(StatusCode.ERROR))
    root.end(end_time=start + int(milliseconds * MS))
    return f"{root.get_span_context().trace_id:032x}"


def test_trace_buffer_keeps_the_slowest_per_route_and_every_failure_whole() -> None:
    """Among thousands of traces over four routes, the buffer holds exactly the three
    slowest of each route and every failed one, each with all its spans."""
    buffer = TraceBuffer(slowest_per_route=3, max_traces=1000, max_bytes=2**24)
    tracer = traced(buffer)
    rng = random.Random(7)
    durations: dict[str, list[tuple[float, str]]] = {}
    failures = set()
    for i in range(4000):
        route = f"GET /route{i % 4}"
        milliseconds = rng.uniform(1, 1000)
        failed = rng.random() < 0.01
        trace_id = request(tracer, route, milliseconds, failed=failed)
        if failed:
            failures.add(trace_id)
        else:
            durations.setdefault(route, []).append((milliseconds, trace_id))

    slowest = buffer.slowest()
    for route, seen in durations.items():
        expected = {trace_id for _, trace_id in sorted(seen, reverse=True)[:3]}
        assert {t.trace_id for t in slowest if t.route == route} == expected, route
    assert [t.duration for t in slowest] == sorted((t.duration for t in slowest), reverse=True)
    assert {t.trace_id for t in buffer.failed()} == failures
    assert failures
    kept = slowest[0].as_dict()
    assert [s["name"] for s in kept["spans"]] == [slowest[0].route, "step 0", "step 1", "step 2"]
    root_id = kept["spans"][0]["span_id"]
    assert all(s["parent_id"] == root_id for s in kept["spans"][1:])


def test_trace_buffer_keeps_no_blocked_loop_span_among_the_requests() -> None:
    """A blocked loop's span (a root of its own, longer than any request) is kept neither
    among the slowest nor the failed, and takes no route's place; the requests still are."""
    buffer = TraceBuffer(slowest_per_route=2, max_routes=1)
    tracer = traced(buffer)
    for failed in (False, True):
        blocked = tracer.start_span(
            names.EVENT_LOOP_BLOCKED_SPAN, context=Context(), start_time=1_000 * MS
        )
        if failed:
            blocked.set_status(Status(StatusCode.ERROR))
        blocked.end(end_time=6_000 * MS)
    slow = request(tracer, "GET /slow", 300)
    failed = request(tracer, "GET /slow", 10, failed=True)
    assert [t.trace_id for t in buffer.slowest()] == [slow]
    assert [t.trace_id for t in buffer.failed()] == [failed]
    assert {t.route for t in buffer.slowest()} == {"GET /slow"}  # not ``other``


def test_trace_buffer_stays_within_its_bytes_and_count_under_a_flood() -> None:
    """Thousands of traces, a fifth of them failed, many routes: the kept traces never
    pass max_bytes or max_traces, the newest failures and the slowest survive, and the
    process's memory does not grow with the traffic."""
    limit = 256 * 1024
    buffer = TraceBuffer(slowest_per_route=5, max_traces=150, max_bytes=limit, max_routes=50)
    tracer = traced(buffer)
    rng = random.Random(11)

    def flood(count: int) -> list[str]:
        failed_ids = []
        for i in range(count):
            failed = i % 5 == 0
            trace_id = request(
                tracer, f"GET /r{rng.randrange(400)}", rng.uniform(1, 500), failed=failed,
                padding=rng.randrange(50, 400),
            )  # fmt: skip
            if failed:
                failed_ids.append(trace_id)
            assert buffer.kept_bytes <= limit
        return failed_ids

    flood(1000)
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    failed_ids = flood(4000)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    kept = buffer.slowest() + buffer.failed()
    assert len(kept) <= 150
    assert sum(len(t.body) for t in kept) == buffer.kept_bytes <= limit
    assert buffer.dropped_traces > 0
    # Failures hold at most about half the room; the newest are the ones kept.
    newest_failed = [t.trace_id for t in buffer.failed()]
    assert newest_failed == list(reversed(failed_ids))[: len(newest_failed)]
    assert newest_failed
    assert buffer.slowest()
    assert len({t.route for t in buffer.slowest()}) <= 51  # max_routes and "other"
    assert OTHER_ROUTE in {t.route for t in buffer.slowest()}
    assert after - before < 4 * limit, f"memory grew by {after - before} bytes"


def test_trace_buffer_forgets_traces_older_than_its_window() -> None:
    """A slow trace from before the window gives way: the next one is kept even if faster."""
    clock = Clock()
    buffer = TraceBuffer(window=60, slowest_per_route=1, clock=clock)
    tracer = traced(buffer)
    slow = request(tracer, "GET /a", 900)
    assert [t.trace_id for t in buffer.slowest()] == [slow]
    assert request(tracer, "GET /a", 10) not in [t.trace_id for t in buffer.slowest()]
    clock.now += 61
    fast = request(tracer, "GET /a", 10)
    assert [t.trace_id for t in buffer.slowest()] == [fast]
    failed = request(tracer, "GET /a", 5, failed=True)
    clock.now += 61
    assert failed not in [t.trace_id for t in buffer.failed()]


def test_trace_buffer_compares_only_with_the_traces_still_in_its_window_between_sweeps() -> None:
    """A full route keeps a faster trace as soon as its fastest kept one leaves the window,
    even within the second after a sweep: what most requests are told without looking at
    the kept traces is dropped with them."""
    clock = Clock()
    start = clock.now
    buffer = TraceBuffer(window=60, slowest_per_route=2, clock=clock)
    tracer = traced(buffer)
    request(tracer, "GET /a", 800, children=0)  # the fastest of the two, the first to leave
    clock.now = start + 30
    second = request(tracer, "GET /a", 900, children=0)
    clock.now = start + 60  # a sweep: the first has not left the window yet
    assert request(tracer, "GET /a", 10, children=0) not in [t.trace_id for t in buffer.slowest()]
    clock.now = start + 60.5  # no sweep within the second; the first has left the window
    fast = request(tracer, "GET /a", 20, children=0)
    clock.now = start + 60.6
    request(tracer, "GET /a", 15, children=0)  # slower than neither: not kept
    assert {t.trace_id for t in buffer.slowest()} == {second, fast}


def test_trace_buffer_bounds_traces_whose_root_never_ends_and_spans_per_trace() -> None:
    """Children of roots that never end (a stream never closed) do not pile up; a huge trace
    keeps max_spans spans and says how many it dropped."""
    buffer = TraceBuffer(max_spans=10)
    tracer = traced(buffer)
    for _ in range(PENDING_TRACES + 500):
        root = tracer.start_span("GET /stream", kind=SpanKind.SERVER)
        tracer.start_span("chunk", context=trace.set_span_in_context(root)).end()
    assert len(buffer._pending) <= PENDING_TRACES
    assert buffer.dropped_traces >= 500
    request(tracer, "GET /big", 50, children=40)
    (big,) = [t.as_dict() for t in buffer.slowest() if t.route == "GET /big"]
    assert len(big["spans"]) == 10
    assert big["dropped_spans"] == 31


def test_trace_buffer_never_raises_into_the_application(caplog: pytest.LogCaptureFixture) -> None:
    """A span the buffer cannot read is logged once; the span's caller goes on."""

    class Broken:
        context = property(lambda self: 1 / 0)

    buffer = TraceBuffer()
    with caplog.at_level(logging.ERROR, "toolkit.telemetry"):
        buffer.on_end(Broken())  # type: ignore[arg-type]
        buffer.on_end(Broken())  # type: ignore[arg-type]
    assert len([r for r in caplog.records if "trace buffer" in r.message]) == 1


# --- percentiles -------------------------------------------------------------------------------


def test_latency_percentiles_are_within_one_percent_and_the_window_slides() -> None:
    clock = Clock()
    table: LatencyTable[str] = LatencyTable(window=100, max_keys=10, other="other", clock=clock)
    rng = random.Random(3)
    values = [rng.lognormvariate(-3, 1.5) for _ in range(20000)]
    for i, value in enumerate(values):
        clock.now += 0.004
        table.record("GET /chat", value, error=i % 10 == 0)
    ((_, summary),) = table.summaries()
    ordered = sorted(values)
    for quantile, found in ((0.5, summary.p50), (0.95, summary.p95), (0.99, summary.p99)):
        exact = ordered[int(quantile * len(ordered)) - 1]
        assert found is not None
        assert abs(found - exact) / exact <= (GAMMA - 1), (quantile, found, exact)
    assert summary.count == 20000
    assert summary.error_rate == pytest.approx(0.1)
    assert summary.throughput == pytest.approx(250, rel=0.01)
    assert summary.max == max(values)
    clock.now += 101
    assert table.summaries() == []


def test_latency_labels_are_bounded_and_the_rest_is_other() -> None:
    table: LatencyTable[str] = LatencyTable(window=60, max_keys=3, other="other")
    for i in range(1000):
        table.record(f"/items/{i}", 0.01)
    keys = {key for key, _ in table.summaries()}
    assert keys == {"/items/0", "/items/1", "/items/2", "other"}
    assert dict(table.summaries())["other"].count == 997


# --- agents and models -------------------------------------------------------------------------


def test_agent_figures_add_up_their_model_calls_through_steps_and_sub_agents() -> None:
    """An agent without usage of its own gets what the model calls under it used, through a
    tool step and a sub-agent; a model call counts once for its model; a failed run counts."""
    stats = AgentStats()
    provider = TracerProvider()
    provider.add_span_processor(stats)
    tracer = provider.get_tracer("test")

    def chat(model: str, tokens: tuple[int, int], cost: float) -> None:
        with tracer.start_as_current_span(f"chat {model}") as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": model,
                    "gen_ai.usage.input_tokens": tokens[0],
                    "gen_ai.usage.output_tokens": tokens[1],
                    "toolkit.gen_ai.cost": cost,
                }
            )

    def agent(name: str) -> Any:
        span = tracer.start_as_current_span(f"invoke_agent {name}")
        return span

    with agent("planner") as planner:
        planner.set_attributes(
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}
        )
        chat("big", (100, 10), 0.01)
        with tracer.start_as_current_span("execute_tool search") as tool:
            tool.set_attribute("gen_ai.operation.name", "execute_tool")
            with agent("researcher") as researcher:
                researcher.set_attributes(
                    {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "researcher"}
                )
                chat("small", (5, 1), 0.001)
                chat("small", (5, 1), 0.001)
    with agent("planner") as failing:
        failing.set_attributes(
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}
        )
        failing.set_status(Status(StatusCode.ERROR))
    with tracer.start_as_current_span("chat with a human"):  # not a GenAI span
        pass

    agents = dict(stats.agents.summaries())
    models = dict(stats.models.summaries())
    assert set(agents) == {"planner", "researcher"}
    assert (agents["researcher"].input_tokens, agents["researcher"].output_tokens) == (10, 2)
    assert (agents["planner"].input_tokens, agents["planner"].output_tokens) == (110, 12)
    assert agents["planner"].cost == pytest.approx(0.012)
    assert (agents["planner"].count, agents["planner"].errors) == (2, 1)
    assert set(models) == {"big", "small"}
    assert (models["small"].count, models["small"].input_tokens) == (2, 10)
    assert stats._below == {}


# --- providers ---------------------------------------------------------------------------------


def plain_app(settings: ToolkitSettings, **options: Any) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item}")
    async def item(item: str) -> dict[str, str]:
        return {"item": item}

    toolkit.install(app, settings, **options)
    return app


@pytest.mark.anyio
async def test_without_any_provider_the_toolkit_traces_into_its_own_never_the_global() -> None:
    """No OTLP endpoint and no app provider: the toolkit's own SDK provider exists for the
    buffer, the global provider stays unset, and requests' traces are kept."""
    app = plain_app(ToolkitSettings(telemetry={"prometheus": False}))
    provider = app.state.toolkit.telemetry.tracer_provider
    assert isinstance(provider, TracerProvider)
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
    async with serving(app) as http:
        assert (await http.get("/items/1")).status_code == 200
        traces = app.state.toolkit.status.traces.slowest()
        assert [t.route for t in traces] == ["GET /items/{item}"]


@pytest.mark.anyio
async def test_the_applications_sdk_provider_gets_the_buffer_and_keeps_its_exporters(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    app = plain_app(ToolkitSettings(), tracer_provider=tracer_provider)
    assert app.state.toolkit.telemetry.tracer_provider is tracer_provider
    async with serving(app) as http:
        await http.get("/items/2")
    # The loop watchdog's own span, when a busy machine held this test's loop up, is no request.
    spans = span_exporter.get_finished_spans()
    assert [s.name for s in spans if s.name != names.EVENT_LOOP_BLOCKED_SPAN] == [
        "GET /items/{item}"
    ]
    assert [t.route for t in app.state.toolkit.status.traces.slowest()] == ["GET /items/{item}"]


@pytest.mark.anyio
async def test_a_provider_that_takes_no_processors_is_reported_and_percentiles_still_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "toolkit.telemetry"):
        app = plain_app(ToolkitSettings(), tracer_provider=trace.NoOpTracerProvider())
    assert "takes no span processors" in caplog.text
    async with serving(app) as http:
        await http.get("/items/3")
    board = app.state.toolkit.status
    assert board.traces.slowest() == []
    assert [key for key, _ in board.requests.summaries()] == [("GET", "/items/{item}")]


@pytest.mark.anyio
async def test_status_off_keeps_nothing_and_serves_no_status_routes() -> None:
    settings = ToolkitSettings(
        status={"enabled": False},
        admin={"tokens": {"ops": OPS_TOKEN}},
        telemetry={"prometheus": False},
    )
    app = plain_app(settings)
    assert app.state.toolkit.status is None
    assert type(app.state.toolkit.telemetry.tracer_provider).__name__ == "ProxyTracerProvider"
    async with serving(app) as http:
        assert (await http.get("/_toolkit/stats", headers=OPS)).status_code == 404
        assert (await http.get("/_toolkit/status", headers=OPS)).status_code == 404


# --- /stats, the page and the roles, against real traffic --------------------------------------


def settings(**admin: Any) -> ToolkitSettings:
    return ToolkitSettings(
        admin=admin or {"tokens": {"ops": OPS_TOKEN}, "read_tokens": {"viewer": VIEWER_TOKEN}},
        telemetry={"prometheus": False},
    )


@pytest.fixture
def app() -> Any:
    return status_app(settings())


SLOW = 0.5  # seconds the one slow request takes


async def traffic(http: httpx.AsyncClient) -> None:
    for i in range(4):
        assert (await http.get(f"/chat/s{i}")).status_code == 200
        assert (await http.get("/answers/1")).status_code == 200
        assert (await http.get("/fail")).status_code == 503
    # Slower than any other request can be on a loaded machine: it must be the slowest trace.
    assert (await http.get("/slow", params={"seconds": SLOW})).status_code == 200
    for _ in range(5):
        assert (await http.get("/slow", params={"seconds": 0.001})).status_code == 200


@pytest.mark.anyio
@pytest.mark.usefixtures("served")
async def test_stats_report_real_traffic_in_every_section(app: Any) -> None:
    async with serving(app) as http:
        await traffic(http)
        response = await http.get("/_toolkit/stats", headers=VIEWER)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    stats = response.json()
    routes = {(r["method"], r["route"]): r for r in stats["routes"]}
    assert routes[("GET", "/chat/{session}")]["count"] == 4
    assert routes[("GET", "/fail")]["error_rate"] == 1.0
    assert routes[("GET", "/answers/{answer_id}")]["errors"] == 0
    slow = routes[("GET", "/slow")]
    assert slow["count"] == 6
    assert slow["max"] >= SLOW
    assert slow["p50"] < 0.05 <= SLOW <= slow["p99"] * GAMMA
    (agent,) = stats["agents"]
    assert (agent["agent"], agent["count"]) == (AGENT, 4)
    assert (agent["input_tokens"], agent["output_tokens"]) == (4 * INPUT_TOKENS, 4 * OUTPUT_TOKENS)
    assert agent["cost"] == pytest.approx(4 * COST)
    (model,) = stats["models"]
    assert (model["model"], model["count"], model["errors"]) == (MODEL, 4, 0)
    assert model["p50"] > 0.004  # the call sleeps 5 ms
    (cache,) = stats["caches"]
    assert (cache["cache"], cache["hit"], cache["miss"], cache["hit_ratio"]) == (
        "response",
        3,
        1,
        0.75,
    )
    assert stats["breakers"] == [
        {"name": "llm", "state": "closed", "forced": None, "degraded": False}
    ]
    (pool,) = stats["pools"]
    assert (pool["name"], pool["size"], pool["used"]) == ("sandbox", 2, 0)
    loop = stats["loop"]
    # The traffic blocks nothing; a collection of the test process's heap may (cause gc).
    blocked = [block for block in loop["blocked"] if block["cause"] != "gc"]
    assert (loop["running"], loop["recording"], blocked) == (True, True, [])
    assert loop["tasks"] >= 1
    traces = stats["traces"]
    assert traces["kept"] is True
    slowest = traces["slowest"][0]
    assert (slowest["name"], slowest["status_code"]) == ("GET /slow", 200)
    assert slowest["duration"] >= SLOW
    chats = [t for t in traces["slowest"] if t["name"] == "GET /chat/{session}"]
    assert {s["name"] for s in chats[0]["spans"]} >= {
        "GET /chat/{session}",
        f"invoke_agent {AGENT}",
        "execute_tool search",
        f"chat {MODEL}",
    }
    assert {t["name"] for t in traces["failed"]} == {"GET /fail"}
    assert len(traces["failed"]) == 4
    assert json.dumps(stats)  # JSON through and through


@pytest.mark.anyio
async def test_stats_traces_parameter_bounds_the_answer(app: Any) -> None:
    async with serving(app) as http:
        await traffic(http)
        none = (await http.get("/_toolkit/stats?traces=0", headers=VIEWER)).json()
        one = (await http.get("/_toolkit/stats?traces=1", headers=VIEWER)).json()
        for bad in ("-1", "x", "²", str(MAX_STATS_TRACES + 1), "1" * 5, ""):
            problem = assert_problem(
                await http.get(f"/_toolkit/stats?traces={bad}", headers=VIEWER), 422
            )
            assert problem["field"] == "traces"
    assert none["traces"]["slowest"] == none["traces"]["failed"] == []
    assert len(one["traces"]["slowest"]) == len(one["traces"]["failed"]) == 1
    assert none["traces"]["count"] > 2


@pytest.mark.anyio
@pytest.mark.usefixtures("served")
async def test_the_status_page_is_served_under_its_own_csp_to_both_roles(app: Any) -> None:
    async with serving(app) as http:
        for headers in (OPS, VIEWER, basic("viewer", VIEWER_TOKEN)):
            response = await http.get("/_toolkit/status", headers=headers)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
            assert "<!-- toolkit:style -->" not in response.text
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp
            assert "'unsafe-inline'" not in csp
            for section in ("routes", "agents", "models", "caches", "breakers", "pools", "loop"):
                assert f'id="{section}"' in response.text
        flags_page = await http.get("/_toolkit/", headers=VIEWER)
        assert 'href="status"' in flags_page.text


@pytest.mark.anyio
@pytest.mark.usefixtures("served")
async def test_a_read_token_reads_everything_and_changes_nothing(app: Any) -> None:
    """The read-only role reads the pages, /stats, flags and history; every write is a 403
    problem and leaves the flag and the cache as they were; the full token still writes."""
    async with serving(app) as http:
        assert (await http.get("/answers/7")).status_code == 200
        for path in (
            "/_toolkit/stats",
            "/_toolkit/flags",
            "/_toolkit/flags/ratelimit",
            "/_toolkit/history",
        ):
            assert (await http.get(path, headers=VIEWER)).status_code == 200, path
        writes = [
            ("PUT", "/_toolkit/flags/ratelimit", {"variant": "off"}),
            ("PUT", "/_toolkit/flags/ratelimit/rollout", {"variant": "off", "percentage": 5}),
            ("DELETE", "/_toolkit/flags/ratelimit", None),
            ("POST", "/_toolkit/cache/invalidate", {"tags": ["answers"]}),
            ("POST", "/_toolkit/stats", {}),
        ]
        for method, path, body in writes:
            for headers in (VIEWER, basic("viewer", VIEWER_TOKEN)):
                response = await http.request(method, path, headers={**headers, **JSON}, json=body)
                problem = assert_problem(response, 403)
                assert "read-only" in problem["detail"], (method, path)
        flag = (await http.get("/_toolkit/flags/ratelimit", headers=VIEWER)).json()
        assert flag["override"] is None
        assert (await http.get("/_toolkit/history", headers=VIEWER)).json()["history"] == []
        stats = (await http.get("/_toolkit/stats", headers=OPS)).json()
        assert stats["caches"][0]["miss"] == 1  # nothing was purged: no second miss yet
        changed = await http.put("/_toolkit/flags/ratelimit", headers=OPS, json={"variant": "off"})
        assert changed.status_code == 200
        assert changed.json()["effective"]["variant"] == "off"


@pytest.mark.anyio
@pytest.mark.usefixtures("served")
async def test_status_routes_refuse_missing_and_wrong_credentials_as_the_admin_routes_do(
    app: Any,
) -> None:
    async with serving(app) as http:
        for path in ("/_toolkit/status", "/_toolkit/stats"):
            missing = assert_problem(await http.get(path), 401)
            assert missing["status"] == 401
            response = await http.get(path)
            assert response.headers["www-authenticate"] == 'Basic realm="agent-server-toolkit"'
            assert_problem(await http.get(path, headers=bearer("not-a-token-at-all")), 403)
            # A read token's name with the full token's secret is no one.
            assert_problem(await http.get(path, headers=basic("viewer", OPS_TOKEN)), 403)
            assert_problem(await http.get(path, headers=basic("ops", VIEWER_TOKEN)), 403)


@pytest.mark.anyio
async def test_read_tokens_alone_mount_the_admin_routes() -> None:
    app = status_app(settings(read_tokens={"viewer": VIEWER_TOKEN}))
    async with serving(app) as http:
        assert (await http.get("/_toolkit/stats", headers=VIEWER)).status_code == 200
        assert_problem(
            await http.put("/_toolkit/flags/ratelimit", headers=VIEWER, json={"variant": "off"}),
            403,
        )


def test_a_token_name_cannot_have_both_roles() -> None:
    with pytest.raises(ConfigurationError, match=r"both admin\.tokens and admin\.read_tokens"):
        settings(tokens={"ops": OPS_TOKEN}, read_tokens={"ops": VIEWER_TOKEN})
    with pytest.raises(ConfigurationError, match="shorter than 16"):
        settings(read_tokens={"viewer": "short"})


# --- the event loop, from the real monitor ----------------------------------------------------


@pytest.mark.anyio
@pytest.mark.usefixtures("served")
async def test_a_blocked_loop_shows_in_stats_with_the_blocking_line_and_the_lag(app: Any) -> None:
    """The monitor install() starts feeds /stats: a synchronous sqlite write in a route is
    reported at its file, line and function, with its cause, task and stack, and the lag
    percentiles over the window take the block as their longest."""
    async with serving(app) as http:

        async def loop() -> dict[str, Any]:
            found: dict[str, Any] = (await http.get("/_toolkit/stats", headers=VIEWER)).json()
            return found["loop"]

        quiet = await eventually_returns(loop, lambda found: found["lag"]["count"] >= 10)
        assert (await http.get("/block")).status_code == 200
        found = await eventually_returns(loop, lambda found: bool(found["blocked"]))
        traces = (await http.get("/_toolkit/stats", headers=VIEWER)).json()["traces"]
    # The block is the loop section's, not a request among the slowest (the request that
    # blocked is, under its route).
    routes = {kept["name"] for kind in ("slowest", "failed") for kept in traces[kind]}
    assert names.EVENT_LOOP_BLOCKED_SPAN not in routes
    assert "GET /block" in routes
    assert quiet["blocked"] == []
    assert quiet["blocked_total"] == 0
    assert quiet["lag"]["p50"] < 0.05
    assert quiet["lag"]["max"] < BLOCK_SECONDS
    assert (found["running"], found["recording"], found["blocked_total"]) == (True, True, 1)
    (block,) = found["blocked"]
    file, line, function = BLOCKING_CALL
    assert block["blocking"]["file"] == file
    assert block["blocking"]["line"] == line
    assert block["blocking"]["function"] == function
    assert "notes.execute(SLOW_INSERT" in block["blocking"]["source"]
    assert block["stack"][-1] == block["blocking"]  # nothing of the app's below the write
    assert block["cause"] == "waiting"  # a sleep inside sqlite: off the CPU
    assert block["hint"] == OFFLOAD_HINT  # the application's call: offload it
    assert block["task"]
    assert BLOCK_SECONDS - 0.05 <= block["duration"] < BLOCK_SECONDS + 0.5
    assert block["started"] == pytest.approx(time.time(), abs=30)
    lag = found["lag"]
    assert lag["max"] >= BLOCK_SECONDS - 0.05  # the probe after the block ran that late
    assert lag["p50"] < 0.05 <= lag["max"]
    assert json.dumps(found)


@pytest.mark.anyio
async def test_the_loop_section_says_not_running_without_a_monitor_and_survives_a_broken_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    off = status_app(settings_with(event_loop={"enabled": False}))
    assert off.state.toolkit.status.loop_monitor is None
    assert off.state.toolkit.status.snapshot()["loop"] == {"running": False}
    app = status_app(settings())
    board = app.state.toolkit.status
    assert board.loop_monitor is app.state.toolkit.loop_monitor
    assert board.snapshot()["loop"]["running"] is False  # made, not started: no app yet

    class Broken(toolkit.LoopMonitor):
        def lag_summary(self) -> Any:
            raise RuntimeError("no lag today")

    board.loop_monitor = Broken()
    with caplog.at_level(logging.ERROR, "toolkit.telemetry"):
        snapshot = board.snapshot()
    assert snapshot["loop"] == {"running": True, "failure": "RuntimeError: no lag today"}
    assert snapshot["routes"] == []  # the rest is there


def test_each_block_in_stats_carries_the_fix_only_when_the_applications_call_blocked() -> None:
    """A block in the application's code carries the offload hint of its span; a GC pause,
    and a block whose stack was not sampled, carry none (null)."""
    app_frame = StackFrame(__file__, 12, "add_note", "connection.execute(INSERT)")

    def block(cause: str, stack: tuple[StackFrame, ...]) -> BlockedLoop:
        return BlockedLoop(time.time(), 0.3, cause, 0.0, 0.0, 0.0, None, stack)

    class Reporting(toolkit.LoopMonitor):
        def recent_blocks(self) -> tuple[BlockedLoop, ...]:
            return (block("code", (app_frame,)), block("gc", (app_frame,)), block("waiting", ()))

    board = status_app(settings()).state.toolkit.status
    board.loop_monitor = Reporting()
    blocked = board.snapshot()["loop"]["blocked"]
    assert [entry["hint"] for entry in blocked] == [None, None, OFFLOAD_HINT]  # newest first
    assert json.loads(json.dumps(blocked)) == blocked


# --- what the agent figures come from ----------------------------------------------------------


@pytest.mark.anyio
async def test_stats_say_how_many_gen_ai_spans_were_seen_and_whether_the_sampler_drops_any(
    span_exporter: InMemorySpanExporter,
) -> None:
    app = status_app(settings())
    async with serving(app) as http:
        before = (await http.get("/_toolkit/stats", headers=VIEWER)).json()["spans"]
        assert (await http.get("/chat/one")).status_code == 200
        after = (await http.get("/_toolkit/stats", headers=VIEWER)).json()["spans"]
    assert before["gen_ai"] == 0
    assert after["gen_ai"] == 2  # the agent's span and its model call's
    assert after["samples_all"] is True
    assert after["sampler"].startswith("ParentBased{root:AlwaysOnSampler")

    sampled = TracerProvider(sampler=TraceIdRatioBased(0.0))
    dropping = status_app(settings(), tracer_provider=sampled)
    async with serving(dropping) as http:
        assert (await http.get("/chat/two")).status_code == 200
        spans = (await http.get("/_toolkit/stats", headers=VIEWER)).json()["spans"]
    assert spans == {"gen_ai": 0, "sampler": "TraceIdRatioBased{0.0}", "samples_all": False}

    no_sdk = status_app(settings(), tracer_provider=trace.NoOpTracerProvider())
    board = no_sdk.state.toolkit.status.snapshot()
    assert board["spans"] == {"gen_ai": 0, "sampler": None, "samples_all": False}


# --- the toolkit's own routes are not the app's traffic ----------------------------------------


@pytest.mark.anyio
@pytest.mark.usefixtures("served")
async def test_admin_requests_count_in_no_route_figure_trace_or_span(
    span_exporter: InMemorySpanExporter, tracer_provider: TracerProvider
) -> None:
    """``agent-toolkit top`` polls /stats every second: those reads, the page and the flag
    API stay out of the route figures, the trace buffer and the app's spans."""
    app = status_app(settings(), tracer_provider=tracer_provider)
    async with serving(app) as http:
        assert (await http.get("/health")).status_code == 200
        for _ in range(30):
            assert (await http.get("/_toolkit/stats", headers=VIEWER)).status_code == 200
        assert (await http.get("/_toolkit/status", headers=VIEWER)).status_code == 200
        assert (await http.get("/_toolkit/flags", headers=VIEWER)).status_code == 200
        assert (await http.get("/_toolkit/nothing", headers=VIEWER)).status_code == 404
        stats = (await http.get("/_toolkit/stats", headers=VIEWER)).json()
    assert [(r["method"], r["route"]) for r in stats["routes"]] == [("GET", "/health")]
    assert [t["name"] for t in stats["traces"]["slowest"]] == ["GET /health"]
    assert stats["traces"]["failed"] == []
    server_spans = [s.name for s in span_exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server_spans == ["GET /health"]


def settings_with(**sections: Any) -> ToolkitSettings:
    return ToolkitSettings(
        admin={"tokens": {"ops": OPS_TOKEN}, "read_tokens": {"viewer": VIEWER_TOKEN}},
        telemetry={"prometheus": False},
        **sections,
    )
