"""One FastAPI app per benchmarked configuration, chosen by ``BENCH_APP``.

Run as ``uvicorn tests.benchmarks.apps:app``; ``BENCH_REDIS_URL`` names the Redis of the
``*-redis`` configurations. Every app answers ``GET /bench`` with the same small JSON and
``GET /health`` with its configuration name, for the load driver to check.

No configuration sets the global OpenTelemetry providers: FastAPI's native telemetry switches
itself on when they are set, and would add its own span and metrics to every configuration.
Providers are passed explicitly, so each configuration measures only what its name says.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from aiocache import RedisCache, cached
from cashews import cache as cashews_cache
from fastapi import FastAPI, Request, Response
from opentelemetry import _logs, metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, generate_latest
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address

import toolkit
from toolkit import ResponseCacheMiddleware, ToolkitSettings

# High enough that no run can exhaust it: every request is decided, none refused. (One per
# microsecond, the finest rate a limit may state.)
LIMIT = "60000000/minute"
PAYLOAD: dict[str, object] = {"message": "ok", "items": [1, 2, 3]}


class DiscardingSpanExporter(SpanExporter):
    """Accepts every batch and drops it: span creation and batching are measured, not I/O."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        del spans
        return SpanExportResult.SUCCESS


def discarding_tracer_provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingSpanExporter()))
    return provider


def global_providers_set() -> bool:
    """Whether any global provider is set (the API hands out proxies until one is)."""
    return any(
        not type(provider).__name__.startswith(("Proxy", "_Proxy"))
        for provider in (
            trace.get_tracer_provider(),
            metrics.get_meter_provider(),
            _logs.get_logger_provider(),
        )
    )


def _redis_url() -> str:
    url = os.environ.get("BENCH_REDIS_URL")
    if not url:
        raise RuntimeError("BENCH_REDIS_URL must name the Redis of the *-redis configurations")
    return url


def _add_health(app: FastAPI, name: str) -> None:
    @app.get("/health")
    async def health() -> dict[str, str | bool]:
        # Read per request: FastAPI's lifespan could configure providers after import.
        return {"app": name, "global_providers": global_providers_set()}


def _plain(name: str) -> FastAPI:
    app = FastAPI()

    @app.get("/bench")
    async def bench() -> dict[str, object]:
        return PAYLOAD

    _add_health(app, name)
    return app


def _toolkit_limited(name: str, url: str) -> FastAPI:
    app = _plain(name)
    settings = ToolkitSettings(
        ratelimit={"limit": LIMIT}, telemetry={"enabled": False}, backend={"url": url}
    )
    toolkit.install(app, settings)
    return app


def _slowapi(name: str, storage_uri: str, *, headers: bool) -> FastAPI:
    """slowapi as its README documents it: a decorated route and the 429 handler."""
    limiter = Limiter(key_func=get_remote_address, storage_uri=storage_uri, headers_enabled=headers)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.get("/bench")
    @limiter.limit(LIMIT)
    async def bench(request: Request, response: Response) -> dict[str, object]:
        return PAYLOAD

    _add_health(app, name)
    return app


def _toolkit_telemetry(name: str) -> FastAPI:
    app = _plain(name)
    # No rate limit; install() creates the meter provider with its Prometheus reader.
    toolkit.install(app, ToolkitSettings(), tracer_provider=discarding_tracer_provider())
    return app


def _otel_fastapi(name: str) -> FastAPI:
    app = _plain(name)
    registry = CollectorRegistry(auto_describe=True)
    meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=discarding_tracer_provider(), meter_provider=meter_provider
    )

    # What install() serves for the toolkit, so the driver can check both record metrics.
    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), media_type="text/plain")

    return app


# The cache configurations: /bench is cached for longer than any run, so every measured
# request is a hit, answered from Redis.
CACHE_TTL = 3600


def _toolkit_cache(name: str, url: str) -> FastAPI:
    """The response cache alone, as `app.add_middleware` documents it (the caller's identity
    in the key, as by default)."""
    app = _plain(name)
    app.add_middleware(ResponseCacheMiddleware, routes={"/bench": {"ttl": CACHE_TTL}}, backend=url)
    return app


def _cashews(name: str, url: str) -> FastAPI:
    """cashews as its README documents it for FastAPI: the endpoint decorated on Redis."""
    cashews_cache.setup(url)
    app = FastAPI()

    @app.get("/bench")
    @cashews_cache(ttl=CACHE_TTL)
    async def bench() -> dict[str, object]:
        return PAYLOAD

    _add_health(app, name)
    return app


def _aiocache(name: str, url: str) -> FastAPI:
    """aiocache's `cached` decorator on its Redis backend."""
    where = urlsplit(url)
    app = FastAPI()

    @app.get("/bench")
    @cached(ttl=CACHE_TTL, cache=RedisCache, endpoint=where.hostname, port=where.port)
    async def bench() -> dict[str, object]:
        return PAYLOAD

    _add_health(app, name)
    return app


CONFIGURATIONS: dict[str, Callable[[str], FastAPI]] = {
    "bare": _plain,
    "toolkit-memory": lambda name: _toolkit_limited(name, "memory://"),
    "toolkit-redis": lambda name: _toolkit_limited(name, _redis_url()),
    "slowapi-memory": lambda name: _slowapi(name, "memory://", headers=True),
    "slowapi-redis": lambda name: _slowapi(name, _redis_url(), headers=True),
    "slowapi-redis-noheaders": lambda name: _slowapi(name, _redis_url(), headers=False),
    "toolkit-telemetry": _toolkit_telemetry,
    "otel-fastapi": _otel_fastapi,
    "toolkit-cache-redis": lambda name: _toolkit_cache(name, _redis_url()),
    "cashews-redis": lambda name: _cashews(name, _redis_url()),
    "aiocache-redis": lambda name: _aiocache(name, _redis_url()),
}
"""Every configuration, in the order the load driver runs and reports them."""


def create_app(name: str) -> FastAPI:
    if name not in CONFIGURATIONS:
        raise RuntimeError(f"BENCH_APP={name!r}; choose one of {', '.join(CONFIGURATIONS)}")
    return CONFIGURATIONS[name](name)


app = create_app(os.environ.get("BENCH_APP", "bare"))
