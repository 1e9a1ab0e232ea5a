"""HTTP telemetry: one server span and the RED metrics per request, named from the registry."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from tests.support.asgi import Serving, call, http_client, http_scope, status_of
from tests.support.otel import points
from toolkit import TelemetryMiddleware
from toolkit.flags import TRACING, FlagStore
from toolkit.telemetry import names

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("served")]


async def item(request: Request) -> Response:
    return PlainTextResponse(request.path_params["item_id"])


async def boom(request: Request) -> Response:
    raise RuntimeError("model exploded")


async def events(request: Request) -> Response:
    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(3):
            yield f"data: {i}\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/boom", boom),
            Route("/events", events),
            Mount("/v1", routes=[Route("/things/{item_id}", item)]),
        ]
    )


@pytest.fixture
def instrumented(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> TelemetryMiddleware:
    return TelemetryMiddleware(
        starlette_app(),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        excluded_paths=["/health"],
    )


async def test_one_server_span_per_request_named_by_route_template(
    instrumented: TelemetryMiddleware, span_exporter: InMemorySpanExporter, served: Serving
) -> None:
    await call(instrumented, http_scope("/items/42", headers=[("user-agent", "agent/1.0")]))
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "GET /items/{item_id}"
    assert span.kind is SpanKind.SERVER
    assert span.attributes == {
        names.HTTP_REQUEST_METHOD: "GET",
        names.URL_SCHEME: "http",
        names.URL_PATH: served.prefix + "/items/42",  # the path as the client sent it
        names.HTTP_ROUTE: "/items/{item_id}",
        names.HTTP_RESPONSE_STATUS_CODE: 200,
        names.NETWORK_PROTOCOL_VERSION: "1.1",
        names.CLIENT_ADDRESS: "127.0.0.1",
        names.USER_AGENT_ORIGINAL: "agent/1.0",
    }


async def test_metrics_carry_route_templates_and_only_registered_attributes(
    instrumented: TelemetryMiddleware, metric_reader: InMemoryMetricReader
) -> None:
    for path in ["/items/1", "/items/2", "/nope/3", "/v1/things/9"]:
        await call(instrumented, http_scope(path))
    durations = points(metric_reader, names.HTTP_SERVER_REQUEST_DURATION)
    routes = {p.attributes[names.HTTP_ROUTE]: p.count for p in durations}
    assert routes == {"/items/{item_id}": 2, names.UNMATCHED_ROUTE: 1, "/v1/things/{item_id}": 1}
    for point in durations:
        assert set(point.attributes) <= set(names.HTTP_SERVER_REQUEST_DURATION_METRIC.attributes)
        assert isinstance(point, HistogramDataPoint)
        assert point.explicit_bounds[-1] >= 300  # minutes-long agent requests keep a bucket
    (active,) = points(metric_reader, names.HTTP_SERVER_ACTIVE_REQUESTS)
    assert active.value == 0
    assert set(active.attributes) <= set(names.HTTP_SERVER_ACTIVE_REQUESTS_METRIC.attributes)


async def test_a_duration_reaches_the_sdk_later_and_its_exemplar_names_its_request(
    instrumented: TelemetryMiddleware,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    """Durations are handed to the SDK in batches: a point recorded while another request's
    span is current still names, as its exemplar, the request it measured; and the next
    collection sees every request, each once."""
    await call(instrumented, http_scope("/items/1"))
    (request,) = span_exporter.get_finished_spans()
    with tracer_provider.get_tracer("test").start_as_current_span("GET /other"):
        instrumented._records.flush()
    (point,) = points(metric_reader, names.HTTP_SERVER_REQUEST_DURATION)
    assert [e.trace_id for e in point.exemplars] == [request.context.trace_id]
    await call(instrumented, http_scope("/items/2"))
    (point,) = points(metric_reader, names.HTTP_SERVER_REQUEST_DURATION)
    assert point.count == 2


async def test_one_endpoint_on_two_routes_reports_the_route_that_matched(
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """The template is the matched route's, also on Starlette versions that record only the
    endpoint (it is then found among the app's routes, by the path where one endpoint serves
    several)."""
    app = Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Mount("/v2", routes=[Route("/products/{item_id}", item)]),
        ]
    )
    middleware = TelemetryMiddleware(
        app, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    await call(middleware, http_scope("/items/1"))
    await call(middleware, http_scope("/v2/products/2"))
    names_seen = [span.name for span in span_exporter.get_finished_spans()]
    assert names_seen == ["GET /items/{item_id}", "GET /v2/products/{item_id}"]


async def test_unmatched_requests_have_no_route_on_the_span(
    instrumented: TelemetryMiddleware, span_exporter: InMemorySpanExporter
) -> None:
    await call(instrumented, http_scope("/no/such/path"))
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "GET"
    assert names.HTTP_ROUTE not in span.attributes
    assert span.attributes[names.HTTP_RESPONSE_STATUS_CODE] == 404


async def test_unknown_methods_are_normalised(
    instrumented: TelemetryMiddleware, span_exporter: InMemorySpanExporter
) -> None:
    await call(instrumented, http_scope("/items/1", method="BREW"))
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes[names.HTTP_REQUEST_METHOD] == "_OTHER"
    assert span.attributes[names.HTTP_REQUEST_METHOD_ORIGINAL] == "BREW"
    assert span.name.startswith("HTTP ")


async def test_exceptions_are_recorded_as_500_errors(
    instrumented: TelemetryMiddleware,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    with pytest.raises(RuntimeError):
        await call(instrumented, http_scope("/boom"))
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[names.ERROR_TYPE] == "RuntimeError"
    assert [e.name for e in span.events] == ["exception"]
    (point,) = points(metric_reader, names.HTTP_SERVER_REQUEST_DURATION)
    assert point.attributes[names.HTTP_RESPONSE_STATUS_CODE] == 500
    assert point.attributes[names.ERROR_TYPE] == "RuntimeError"


async def test_incoming_trace_context_is_continued(
    instrumented: TelemetryMiddleware, span_exporter: InMemorySpanExporter
) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await call(instrumented, http_scope("/items/1", headers=[("traceparent", parent)]))
    (span,) = span_exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == "b7ad6b7169203331"


async def test_streaming_passes_every_chunk_with_one_response_start(
    instrumented: TelemetryMiddleware, span_exporter: InMemorySpanExporter
) -> None:
    bare = await call(starlette_app(), http_scope("/events"))
    observed = await call(instrumented, http_scope("/events"))
    assert observed == bare
    assert sum(m["type"] == "http.response.start" for m in observed) == 1
    assert len(span_exporter.get_finished_spans()) == 1


async def test_excluded_paths_and_flag_off_are_the_bare_app(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    off = TelemetryMiddleware(
        starlette_app(),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        flags=FlagStore(defaults={TRACING: "off"}),
    )
    assert await call(off, http_scope("/items/1")) == await call(
        starlette_app(), http_scope("/items/1")
    )
    excluded = TelemetryMiddleware(
        starlette_app(),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        excluded_paths=["/items/*"],
    )
    await call(excluded, http_scope("/items/1"))
    assert span_exporter.get_finished_spans() == ()
    assert points(metric_reader, names.HTTP_SERVER_REQUEST_DURATION) == []


async def test_fastapi_included_routers_report_the_full_template(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    app = FastAPI()
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def read(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    app.include_router(router, prefix="/api/v2")
    app.add_middleware(TelemetryMiddleware, tracer_provider=tracer_provider)
    async with http_client(app) as client:
        assert (await client.get("/api/v2/items/7")).status_code == 200
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "GET /api/v2/items/{item_id}"


async def test_an_app_with_its_own_tracer_provider_keeps_it(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """The toolkit traces into the provider the app set; it never replaces it."""
    import toolkit

    trace.set_tracer_provider(tracer_provider)
    app = starlette_app()
    toolkit.install(app, toolkit.ToolkitSettings(ratelimit={"limit": "5/minute"}))
    assert trace.get_tracer_provider() is tracer_provider
    async with http_client(app) as client:
        await client.get("/items/3")
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "GET /items/{item_id}"
    assert [e.name for e in span.events] == [names.RATE_LIMIT_DECISION_EVENT]


async def test_fastapi_native_telemetry_is_not_doubled(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """When FastAPI traces requests itself (the app configured OpenTelemetry), the toolkit
    adds its decisions to FastAPI's server span instead of opening a second one."""
    import toolkit

    trace.set_tracer_provider(tracer_provider)
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    toolkit.install(app, toolkit.ToolkitSettings(ratelimit={"limit": "5/minute"}))
    async with http_client(app) as client:
        assert (await client.get("/items/3")).status_code == 200
    servers = [s for s in span_exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(servers) == 1
    assert names.RATE_LIMIT_DECISION_EVENT in [e.name for e in servers[0].events]


async def test_status_of_a_plain_request_is_unchanged(instrumented: TelemetryMiddleware) -> None:
    assert status_of(await call(instrumented, http_scope("/items/5"))) == 200
