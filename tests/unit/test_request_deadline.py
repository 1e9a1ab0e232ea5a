"""Request deadlines: the budget a request gets (default, route, header), the 504 when it runs
out before the answer started, a stream that started left alone, the server span and the
metric, the kill switch; each test served plainly, under a root path and mounted."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import toolkit
from tests.support.asgi import body_of, call, headers_of, http_client, http_scope, status_of
from tests.support.otel import counter_value
from toolkit.settings import DeadlineSettings
from toolkit.telemetry import names

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("served")]


async def left(request: Request) -> Response:
    return JSONResponse({"left": toolkit.time_left()})


async def slow(request: Request) -> Response:
    await asyncio.sleep(10)
    return JSONResponse({"never": True})


async def raises(request: Request) -> Response:
    with toolkit.deadline(0.01):
        await asyncio.sleep(0.02)
        toolkit._deadlines.check()
    return JSONResponse({"never": True})


async def times_out(request: Request) -> Response:
    raise TimeoutError("the app's own timeout")


class Stream:
    """An answer that starts at once and ends past the budget (raw ASGI: Starlette's
    streaming response stops at the test client's disconnect)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        await asyncio.sleep(0.15)  # past the budget, once the answer has started
        await send({"type": "http.response.body", "body": b"data: last\n\n"})


ROUTES = [
    Route("/left", left),
    Route("/chat/{session}", left),
    Route("/stream/{name}", left),
    Route("/slow", slow),
    Route("/raises", raises),
    Route("/timeout", times_out),
    Route("/sse", Stream()),
]


def middleware(*routes: Route, **settings: Any) -> Starlette:
    """The app with the middleware in its stack (as ``install()`` and ``add_middleware`` put
    it: inside Starlette's error middleware, which would answer 500 before it otherwise)."""
    return Starlette(
        routes=[*ROUTES, *routes],
        middleware=[
            Middleware(
                toolkit.DeadlineMiddleware, settings=DeadlineSettings.model_validate(settings)
            )
        ],
    )


async def time_left_at(app: Any, path: str, *headers: tuple[str, str]) -> float | None:
    messages = await call(app, http_scope(path, headers=headers))
    assert status_of(messages) == 200
    found: float | None = json.loads(body_of(messages))["left"]
    return found


# --- the budget --------------------------------------------------------------------------------


async def test_without_settings_a_request_has_no_deadline() -> None:
    assert await time_left_at(middleware(), "/left") is None


async def test_the_default_budget_and_the_routes_own_are_the_requests_deadline() -> None:
    app = middleware(default="2s", routes={"/chat/{session}": "500ms", "/stream/*": None})
    found = await time_left_at(app, "/left")
    assert found is not None
    assert 1.9 < found <= 2
    found = await time_left_at(app, "/chat/abc")
    assert found is not None
    assert 0.4 < found <= 0.5
    assert await time_left_at(app, "/stream/news") is None  # a route with no deadline


async def test_the_header_sets_the_budget_bounded_by_the_maximum() -> None:
    app = middleware(default="2s", max="5s")
    found = await time_left_at(app, "/left", ("request-timeout", "0.3"))
    assert found is not None
    assert 0.2 < found <= 0.3
    found = await time_left_at(app, "/left", ("Request-Timeout", "3600"))
    assert found is not None
    assert 4.9 < found <= 5  # cut to the maximum
    named = middleware(header="X-Budget")
    found = await time_left_at(named, "/left", ("x-budget", "1"))
    assert found is not None
    assert 0.9 < found <= 1
    assert await time_left_at(middleware(header=None), "/left", ("request-timeout", "1")) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("soon", "not_a_number"),
        ("-1", "not_a_number"),
        ("1e9", "not_a_number"),
        ("inf", "not_a_number"),
        ("nan", "not_a_number"),
        ("", "not_a_number"),
        ("٣", "not_a_number"),  # a non-ASCII digit, which float() would take
        ("0", "not_positive"),
        ("0.000", "not_positive"),
    ],
)
async def test_a_header_that_is_not_a_positive_number_is_ignored_and_noted_on_the_span(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    value: str,
    reason: str,
) -> None:
    app = middleware(default="2s")
    with tracer_provider.get_tracer("test").start_as_current_span("server"):
        messages = await call(
            app,
            http_scope("/left", headers=[("request-timeout", value.encode().decode("latin-1"))]),
        )
    assert status_of(messages) == 200
    found = json.loads(body_of(messages))["left"]
    assert 1.9 < found <= 2  # the default holds
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[names.DEADLINE_HEADER_IGNORED] == reason
    assert span.attributes[names.DEADLINE_SOURCE] == "default"


# --- running out -------------------------------------------------------------------------------


async def test_a_request_that_runs_out_is_answered_504_problem_json_at_its_budget() -> None:
    app = middleware(default="100ms")
    started = time.monotonic()
    messages = await call(app, http_scope("/slow"))
    elapsed = time.monotonic() - started
    assert status_of(messages) == 504
    assert 0.09 < elapsed < 1.0
    headers = dict(headers_of(messages))
    assert headers["content-type"] == "application/problem+json"
    assert headers["cache-control"] == "no-store"
    problem = json.loads(body_of(messages))
    assert problem["status"] == 504
    assert problem["title"] == "Gateway Timeout"
    assert problem["budget"] == 0.1
    assert problem["detail"] == "the request's time budget of 0.1s ran out before its answer"


async def test_a_deadline_exceeded_escaping_the_route_is_a_504_too() -> None:
    messages = await call(middleware(), http_scope("/raises"))
    assert status_of(messages) == 504
    assert "budget" not in json.loads(body_of(messages))


async def test_the_apps_own_timeout_error_is_not_taken_for_the_deadline() -> None:
    with pytest.raises(TimeoutError, match="the app's own timeout"):
        await call(middleware(default="5s"), http_scope("/timeout"))


async def test_a_response_that_started_is_never_cut_by_the_deadline() -> None:
    messages = await call(middleware(default="100ms"), http_scope("/sse"))
    assert status_of(messages) == 200
    assert body_of(messages) == b"data: first\n\ndata: last\n\n"


async def test_a_resilient_timeout_in_the_route_fits_in_the_request_budget() -> None:
    """``@resilient(timeout="5s")`` of a slow call under a 200 ms request: a 504 at 200 ms."""

    @toolkit.resilient(timeout="5s")
    async def call_model() -> str:
        await asyncio.sleep(5)
        return "never"

    async def chat(request: Request) -> Response:
        return JSONResponse({"answer": await call_model()})

    app = middleware(Route("/chat", chat), default="200ms")
    started = time.monotonic()
    messages = await call(app, http_scope("/chat"))
    assert status_of(messages) == 504
    assert 0.19 < time.monotonic() - started < 1.0


async def test_two_timeouts_in_sequence_share_one_request_budget() -> None:
    """The issue's case: two 4 s timeouts one after the other made one chat take 8.1 s. Under
    a budget, the second call gets what the first left: the request ends at its budget."""
    calls: list[float | None] = []

    @toolkit.resilient(timeout="200ms")
    async def privacy_check() -> None:
        calls.append(toolkit.time_left())
        await asyncio.sleep(0.15)

    @toolkit.resilient(timeout="200ms")
    async def retrieve() -> None:
        calls.append(toolkit.time_left())
        await asyncio.sleep(0.15)

    async def chat(request: Request) -> Response:
        await privacy_check()
        await retrieve()
        return JSONResponse({"answer": "done"})

    app = middleware(Route("/chat", chat), default="250ms")
    started = time.monotonic()
    messages = await call(app, http_scope("/chat"))
    elapsed = time.monotonic() - started
    assert status_of(messages) == 504
    assert 0.24 < elapsed < 0.3 + 0.5  # the budget, not 0.15 + 0.15 and not 0.2 + 0.2
    assert calls[1] is not None
    assert calls[1] < 0.11


# --- the kill switch and other scopes ----------------------------------------------------------


async def test_the_flag_off_sets_no_budget_and_answers_no_504() -> None:
    app = middleware(default="100ms")
    with toolkit.flags.override({toolkit.flags.PIPELINES_DEADLINE: "off"}):
        assert await time_left_at(app, "/left", ("request-timeout", "1")) is None
        with pytest.raises(toolkit.DeadlineExceeded):
            await call(app, http_scope("/raises"))


async def test_non_http_scopes_pass_straight_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        assert toolkit.time_left() is None

    app = toolkit.DeadlineMiddleware(
        inner, settings=DeadlineSettings.model_validate({"default": "1s"})
    )
    await app({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


# --- through install() -------------------------------------------------------------------------


async def test_install_puts_the_budget_and_the_504_on_the_server_span_and_counts_it(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    app = FastAPI()

    @app.get("/chat/{session}")
    async def chat(session: str) -> dict[str, str]:
        await asyncio.sleep(10)
        return {"never": session}

    @app.get("/fast")
    async def fast() -> dict[str, float | None]:
        return {"left": toolkit.time_left()}

    toolkit.install(
        app,
        toolkit.ToolkitSettings(deadline={"routes": {"/chat/{session}": "100ms"}}),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    async with http_client(app) as client:
        answer = await client.get("/chat/s1")
        fast = await client.get("/fast", headers={"Request-Timeout": "2"})
    assert answer.status_code == 504
    assert answer.headers["content-type"] == "application/problem+json"
    assert 1.9 < fast.json()["left"] <= 2
    servers = [s for s in span_exporter.get_finished_spans() if s.name.startswith("GET")]
    by_route = {s.attributes[names.HTTP_ROUTE]: s for s in servers if s.attributes}
    chat_span = by_route["/chat/{session}"]
    assert chat_span.attributes is not None
    assert chat_span.attributes[names.DEADLINE_BUDGET] == 0.1
    assert chat_span.attributes[names.DEADLINE_SOURCE] == "route"
    assert chat_span.attributes[names.DEADLINE_EXPIRED] is True
    assert chat_span.attributes[names.HTTP_RESPONSE_STATUS_CODE] == 504
    fast_span = by_route["/fast"]
    assert fast_span.attributes is not None
    assert fast_span.attributes[names.DEADLINE_SOURCE] == "header"
    assert names.DEADLINE_EXPIRED not in fast_span.attributes
    assert (
        counter_value(metric_reader, names.DEADLINE_EXCEEDED, **{names.DEADLINE_SOURCE: "route"})
        == 1
    )


async def test_a_pool_acquire_in_a_route_is_bounded_by_the_request_budget() -> None:
    pool: toolkit.AgentPool[list[str]] = toolkit.AgentPool(list, size=1, acquire_timeout="5s")
    app = FastAPI()

    @app.get("/held")
    async def held() -> dict[str, bool]:
        async with pool.acquire(), pool.acquire():  # the second waits for the first
            return {"never": True}

    toolkit.install(app, toolkit.ToolkitSettings(deadline={"default": "150ms"}))
    started = time.monotonic()
    async with http_client(app) as client:
        answer = await client.get("/held")
    assert answer.status_code == 504  # the request's deadline, not the pool's 503
    assert time.monotonic() - started < 1.0
    await pool.close()


# --- every way of serving ----------------------------------------------------------------------


async def test_the_budget_follows_the_route_under_every_way_of_serving() -> None:
    """``/chat/{session}`` is the app's own path, under ``root_path`` and in a mount alike."""
    app = middleware(routes={"/chat/{session}": "300ms"})
    async with http_client(app) as client:
        answer = await client.get("/chat/abc")
        other = await client.get("/left")
    assert 0.2 < answer.json()["left"] <= 0.3
    assert other.json()["left"] is None
    assert isinstance(answer, httpx.Response)


# --- races -------------------------------------------------------------------------------------


async def test_concurrent_requests_each_get_their_own_budget_and_answer() -> None:
    """Requests side by side with budgets from their headers, each slower or faster than its
    own: each is answered by its own budget, never by another's."""

    async def work(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params["takes"]))
        return JSONResponse({"left": toolkit.time_left()})

    app = middleware(Route("/work", work))
    rng = random.Random(3)
    cases = [(rng.choice([0.15, 0.3]), rng.choice([0.0, 0.6])) for _ in range(30)]

    async def one(budget: float, takes: float) -> int:
        scope = http_scope("/work", headers=[("request-timeout", str(budget))])
        scope["query_string"] = f"takes={takes}".encode()
        return status_of(await call(app, scope))

    statuses = await asyncio.gather(*(one(budget, takes) for budget, takes in cases))
    assert list(statuses) == [200 if takes < budget else 504 for budget, takes in cases]


async def test_a_cancelled_request_is_cancelled_not_answered_504() -> None:
    """The server cancelling a request (shutdown, a client gone) is not the deadline."""
    entered = asyncio.Event()

    async def waits(request: Request) -> Response:
        entered.set()
        await asyncio.sleep(10)
        return JSONResponse({"never": True})

    app = middleware(Route("/waits", waits), default="5s")
    request = asyncio.create_task(call(app, http_scope("/waits")))
    await entered.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
