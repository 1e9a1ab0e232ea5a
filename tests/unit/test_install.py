"""install(): the documented stack on a real app, its lifespan, /metrics and the OTLP export."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi import FastAPI
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

import toolkit
from tests.support.asgi import http_client, lifespan
from tests.support.promtool import promtool_problems
from toolkit import ConfigurationError, ToolkitSettings
from toolkit.telemetry import names

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("served")]


def agent_app(events: list[str] | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        if events is not None:
            events.append("app startup")
        yield {"model": "scripted"}
        if events is not None:
            events.append("app shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    return app


async def test_install_wraps_the_apps_own_lifespan(redis_url: str) -> None:
    """The backend connects before the app starts and closes after it stops."""
    events: list[str] = []
    app = agent_app(events)
    installed = toolkit.install(app, ToolkitSettings(backend={"url": redis_url}))
    original_connect, original_close = installed.backend.connect, installed.backend.close

    async def connect() -> None:
        events.append("toolkit startup")
        await original_connect()

    async def close() -> None:
        await original_close()
        events.append("toolkit shutdown")

    installed.backend.connect = connect  # type: ignore[method-assign]
    installed.backend.close = close  # type: ignore[method-assign]

    async with lifespan(app), http_client(app) as http:
        assert (await http.get("/items/1")).status_code == 200
        events.append("served")
    assert events == [
        "toolkit startup",
        "app startup",
        "served",
        "app shutdown",
        "toolkit shutdown",
    ]


async def test_a_mounted_app_starts_its_toolkit_when_the_parent_enters_its_lifespan() -> None:
    """A parent does not run a mounted app's lifespan; entering it from the parent's, as
    docs/ratelimit.md shows, starts and stops the toolkit installed on the mounted app, whose
    paths are its own (/items/{item_id}, not /v1/items/{item_id})."""
    events: list[str] = []
    api = agent_app(events)
    installed = toolkit.install(
        api, ToolkitSettings(ratelimit={"routes": {"/items/{item_id}": "1/minute"}})
    )

    @asynccontextmanager
    async def parent_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with api.router.lifespan_context(api):
            yield

    parent = FastAPI(lifespan=parent_lifespan)
    parent.mount("/v1", api)
    async with lifespan(parent), http_client(parent) as http:
        assert installed.store.loaded_at is not None  # the toolkit started
        assert [(await http.get("/v1/items/1")).status_code for _ in range(2)] == [200, 429]
    assert events == ["app startup", "app shutdown"]


@pytest.mark.parametrize("entered", [False, True])
async def test_a_mounted_toolkit_never_started_says_so_once_at_its_first_request(
    entered: bool, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """On a shared backend, a toolkit whose lifespan never ran serves from defaults, blind to
    the fleet's kill switches: the first request logs it, with the fix; once, and not at all
    when the parent enters the mounted app's lifespan."""
    api = agent_app()
    toolkit.install(api, ToolkitSettings(backend={"url": redis_url}))

    @asynccontextmanager
    async def parent_lifespan(app: FastAPI) -> AsyncIterator[None]:
        if entered:
            async with api.router.lifespan_context(api):
                yield
        else:
            yield

    parent = FastAPI(lifespan=parent_lifespan)
    parent.mount("/v1", api)
    with caplog.at_level(logging.WARNING, logger="toolkit.flags"):
        async with lifespan(parent), http_client(parent) as http:
            for i in range(3):
                assert (await http.get(f"/v1/items/{i}")).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "toolkit.flags"]
    if entered:
        assert warnings == []
    else:
        (warning,) = warnings
        assert "never started" in warning
        assert "lifespan_context" in warning


async def test_install_serves_prometheus_metrics_that_parse() -> None:
    app = agent_app()
    toolkit.install(app, ToolkitSettings(ratelimit={"limit": "2/minute"}))
    async with http_client(app) as http:
        for i in range(3):
            await http.get(f"/items/{i}")
        for _ in range(3):  # /metrics is neither limited nor traced
            response = await http.get("/metrics")
            assert response.status_code == 200
        openmetrics = await http.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert "http_server_request_duration_seconds" in families
    decisions = {
        s.labels["toolkit_rate_limit_result"]: s.value
        for s in families["toolkit_rate_limit_requests"].samples
        if s.name.endswith("_total")
    }
    assert decisions == {"allowed": 2.0, "rejected": 1.0}
    routes = {
        s.labels["http_route"] for s in families["http_server_request_duration_seconds"].samples
    }
    assert "/metrics" not in routes
    assert "process_cpu_seconds_total" in response.text


async def test_install_serves_the_apps_own_prometheus_reader_when_it_set_global_providers() -> None:
    """An app that set its own global providers (a 404 on /metrics before): /metrics serves
    its Prometheus reader, where the toolkit's metrics are, and promtool finds nothing wrong."""
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])  # the global REGISTRY
    metrics.set_meter_provider(provider)
    try:
        app = agent_app()
        toolkit.install(app, ToolkitSettings(ratelimit={"limit": "2/minute"}))
        async with http_client(app) as http:
            for i in range(3):
                await http.get(f"/items/{i}")
            for _ in range(3):  # still neither limited nor traced
                response = await http.get("/metrics")
                assert response.status_code == 200, response.text
    finally:
        provider.shutdown()  # takes its collector out of the global registry
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    decisions = {
        s.labels["toolkit_rate_limit_result"]: s.value
        for s in families["toolkit_rate_limit_requests"].samples
        if s.name.endswith("_total")
    }
    assert decisions == {"allowed": 2.0, "rejected": 1.0}
    assert "process_cpu_seconds_total" in response.text
    assert promtool_problems(response.content) == ""


async def test_install_says_what_to_do_when_the_apps_provider_has_no_prometheus_reader(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Metrics that go only elsewhere (OTLP, a test reader): /metrics is not served, and the
    startup log names the reader to add and the setting that silences it."""
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    metrics.set_meter_provider(provider)
    try:
        app = agent_app()
        with caplog.at_level(logging.WARNING, logger="toolkit.telemetry"):
            toolkit.install(app)
            [warning] = caplog.records
            caplog.clear()
            toolkit.install(agent_app(), ToolkitSettings(telemetry={"prometheus": False}))
            assert caplog.records == []
        async with http_client(app) as http:
            assert (await http.get("/metrics")).status_code == 404
    finally:
        provider.shutdown()
    message = warning.getMessage()
    assert message.startswith("/metrics is not served")
    assert "PrometheusMetricReader()" in message
    assert "TOOLKIT_TELEMETRY__PROMETHEUS=false" in message


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=a",
        "text/plain; version=1.x",
        "application/openmetrics-text; version=" + "9" * 5000,
        "application/openmetrics-text; version=1.\u0663",  # int() reads it; latin-1 cannot
    ],
)
async def test_install_metrics_answers_406_to_a_format_version_that_is_not_one(
    accept: str,
) -> None:
    """Unauthenticated and a 500 before: a problem+json 406 naming what to ask for."""
    app = agent_app()
    toolkit.install(app)
    async with http_client(app) as http:
        response = await http.get("/metrics", headers={"accept": accept.encode()})
        assert response.status_code == 406, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "version=1.0.0" in response.json()["detail"]
        # What Prometheus 3 sends still gets OpenMetrics.
        scraper = (
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
            "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;"
            "escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        )
        scraped = await http.get("/metrics", headers={"accept": scraper})
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("application/openmetrics-text")


async def test_install_twice_or_on_a_bare_asgi_app_is_refused() -> None:
    app = agent_app()
    toolkit.install(app)
    with pytest.raises(ConfigurationError, match="already called"):
        toolkit.install(app)

    async def raw(scope: object, receive: object, send: object) -> None:
        pass

    with pytest.raises(ConfigurationError, match="Starlette or FastAPI app"):
        toolkit.install(raw)  # type: ignore[arg-type]


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A loopback HTTP endpoint that keeps what OTLP exporters post to it."""
    received: list[tuple[str, bytes]] = []
    handler = type("Handler", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


async def test_install_exports_traces_and_metrics_over_otlp(
    collector: tuple[str, list[tuple[str, bytes]]],
) -> None:
    endpoint, received = collector
    app = agent_app()
    installed = toolkit.install(
        app,
        ToolkitSettings(
            ratelimit={"limit": "5/minute"},
            telemetry={"otlp_endpoint": endpoint, "service_name": "support-agent"},
        ),
    )
    async with http_client(app) as http:
        await http.get("/items/1")
    await installed.shutdown()  # flushes the exporters

    spans = []
    metric_names = set()
    for path, body in received:
        if path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                assert service["service.name"] == "support-agent"
                spans += [s for scope in resource_spans.scope_spans for s in scope.spans]
        elif path == "/v1/metrics":
            request = ExportMetricsServiceRequest.FromString(body)
            metric_names |= {
                m.name
                for rm in request.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
            }
    assert [s.name for s in spans] == ["GET /items/{item_id}"]
    assert [e.name for e in spans[0].events] == [names.RATE_LIMIT_DECISION_EVENT]
    assert {names.HTTP_SERVER_REQUEST_DURATION, names.RATE_LIMIT_REQUESTS} <= metric_names
