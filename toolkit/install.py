"""``install(app)``: every capability wired in the documented order, in one call.

The request path is ``FlagContext -> Telemetry -> Deadline -> RateLimit -> ResponseCache ->
the app``: the flag snapshot pinned first, so every decision of a request sees the same flags;
telemetry next so it sees every request, 429s, 504s and cache hits included; the request's
deadline then, so everything after it (backend calls included) fits in its budget; the limiter
(then the app's slowapi limiter, if it has one) before any cache or app work. Order and
wiring live here and nowhere else.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from opentelemetry import metrics, trace
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from toolkit._problem import problem_response
from toolkit.admin import admin_routes
from toolkit.admin._app import admin_paths
from toolkit.admin._sections import breaker_rows, cache_rows, pool_rows
from toolkit.agents import AgentTelemetry, set_current_agent_telemetry
from toolkit.backends import Backend, backend_from_settings
from toolkit.cache import CacheStore, ResponseCacheMiddleware, set_current_cache
from toolkit.cache._setup import cache_store_from_settings
from toolkit.errors import CircuitOpenError, ConfigurationError, DeferRefused, PoolError
from toolkit.flags import (
    FlagContextMiddleware,
    FlagSource,
    FlagStore,
    set_current_flags,
    set_current_store,
)
from toolkit.flags._setup import flag_store_from_settings
from toolkit.pipelines import DeadlineMiddleware
from toolkit.pipelines.deferred._background import set_current_runner
from toolkit.pipelines.deferred._http import defer_refused
from toolkit.pipelines.deferred._runners import deferred_runner
from toolkit.pipelines.deferred._task import TaskRunner
from toolkit.pipelines.fanout._telemetry import FanoutTelemetry, set_current_fanout_telemetry
from toolkit.pipelines.offloading._decorator import current_offload_pool, set_current_offload_pool
from toolkit.pipelines.offloading._pool import OffloadPool
from toolkit.plugins import LoadedPlugins, PluginContext, load_plugins
from toolkit.pool import AgentPool
from toolkit.pool._http import pool_unavailable
from toolkit.ratelimit import RateLimitMiddleware
from toolkit.ratelimit.slowapi import installed_slowapi_limits
from toolkit.resilience import BreakerRegistry, set_current_breakers
from toolkit.resilience._http import circuit_open
from toolkit.settings import ToolkitSettings
from toolkit.telemetry._workers import MetricsExposition
from toolkit.telemetry.loop import LoopMonitor
from toolkit.telemetry.middleware import TelemetryMiddleware
from toolkit.telemetry.setup import Telemetry, setup_telemetry
from toolkit.telemetry.status import StatusBoard


@dataclass
class Toolkit:
    """What :func:`install` set up on an app (also at ``app.state.toolkit``)."""

    settings: ToolkitSettings
    backend: Backend
    telemetry: Telemetry
    flags: FlagSource
    """What the capabilities ask: ``store``, or the app's OpenFeature client."""
    store: FlagStore
    """The toolkit's flag store: overrides, history, the admin routes and the CLI use it."""
    cache: CacheStore
    """The store of every cache: responses, ``@cached``, ``@cache_embeddings``."""
    breakers: BreakerRegistry
    """The circuit breakers ``@resilient(breaker="name")`` uses, shared through the backend."""
    pools: list[AgentPool[Any]] = field(default_factory=list)
    """The agent pools started before serving and closed at shutdown."""
    loop_monitor: LoopMonitor | None = None
    """Loop lag and blocked-loop reports, started with the app; None when
    ``event_loop.enabled`` is false."""
    plugins: LoadedPlugins = field(default_factory=LoadedPlugins)
    """The framework plugins applied to the app (``toolkit.plugins``)."""
    status: StatusBoard | None = None
    """What the status page, ``/stats`` and ``agent-toolkit top`` show (``status.enabled``)."""
    deferred: TaskRunner | None = None
    """Runs ``toolkit.defer`` and ``@toolkit.background`` work: started with the app, drained
    at shutdown within ``defer.grace``."""
    _exposition: MetricsExposition | None = field(default=None, repr=False)
    _offload: OffloadPool | None = field(default=None, repr=False)
    """The thread pool of ``@toolkit.offload`` and ``toolkit.run_sync`` (``offload``)."""

    def add_pool(self, pool: AgentPool[Any]) -> AgentPool[Any]:
        """Start ``pool`` with the app (warm-up before the first request) and close it at
        shutdown; the same as ``install(app, pools=[pool])``. Call it before startup."""
        if not isinstance(pool, AgentPool):
            raise ConfigurationError(
                f"add_pool({pool!r}): an AgentPool, e.g. add_pool(toolkit.AgentPool(make_agent))"
            )
        if pool not in self.pools:
            self.pools.append(pool)
        return pool

    async def startup(self) -> None:
        """Connect the backend, load the flags, follow cache invalidations and breaker
        transitions, then build the pools' warm objects. Never
        fails: an unreachable backend is logged and served around, and a factory that fails
        at warm-up is logged and tried again on demand. Waits for the warm-up (each build
        bounded by its pool's ``create_timeout``), so the first request finds it done."""
        if self._exposition is not None:
            await self._exposition.start()  # joins the other workers, if any
        if self.loop_monitor is not None:
            self.loop_monitor.start()
        await self.backend.connect()
        # Side by side: each waits for its subscription, or for its first attempt to fail.
        await asyncio.gather(self.store.start(), self.cache.start(), self.breakers.start())
        if self.pools:
            await asyncio.gather(
                *(
                    pool.start(
                        flags=self.flags,
                        meter_provider=self.telemetry.meter_provider,
                        tracer_provider=self.telemetry.tracer_provider,
                    )
                    for pool in self.pools
                )
            )
        if self.deferred is not None:
            await self.deferred.start()  # last: deferred tasks may use all of the above

    async def drain_deferred(self) -> None:
        """Let the deferred tasks accepted finish within ``defer.grace`` (the rest is
        cancelled, counted and logged); later hand-offs are refused. Idempotent."""
        if self.deferred is not None:
            await self.deferred.drain(self.settings.defer.grace)

    async def shutdown(self) -> None:
        """Drain the deferred work (if the lifespan has not), close the pools and the offload
        pool, stop following breakers, caches and flags, close the backend, stop the loop
        monitor, flush the providers the toolkit created."""
        await self.drain_deferred()
        await self.plugins.shutdown()
        if self.pools:
            await asyncio.gather(*(pool.close() for pool in self.pools))
        if self._offload is not None:  # waits at most offload.shutdown_timeout
            await self._offload.close()
            if current_offload_pool() is self._offload:
                set_current_offload_pool(None)
        await self.breakers.stop()
        await self.cache.stop()
        await self.store.stop()
        await self.backend.close()
        if self._exposition is not None:
            await self._exposition.stop()  # its final counts, before the providers stop
        if self.loop_monitor is not None:
            self.loop_monitor.stop()
        await anyio.to_thread.run_sync(self.telemetry.shutdown)


def install(
    app: Starlette,
    settings: ToolkitSettings | None = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    pools: Iterable[AgentPool[Any]] = (),
) -> Toolkit:
    """Add the toolkit to a Starlette or FastAPI app: telemetry, rate limiting, ``/metrics``
    and the startup/shutdown of its backend and pools, around any lifespan the app already
    has. A :class:`~toolkit.errors.PoolError` raised by a route (full wait queue, acquire
    timeout) is answered 503 problem+json with ``Retry-After``, and so is a
    :class:`~toolkit.errors.CircuitOpenError` (``Retry-After``: the time the breaker stays
    open), unless the app handles them, and so is a :class:`~toolkit.errors.DeferRefused`
    (deferred work that could not be queued). The runner of deferred work starts with the
    app and is drained within ``defer.grace`` when it stops, before the app's own lifespan
    shuts down.

    Args:
        app: the application; other ASGI apps can use the middlewares directly.
        settings: all settings; loaded from ``TOOLKIT_*`` and ``toolkit.toml`` when None.
        tracer_provider / meter_provider: providers to use instead of the global ones.
        pools: agent pools to warm up before the first request and close at shutdown (more
            with ``toolkit.add_pool(pool)`` before startup).

    The installed framework plugins (``toolkit.plugins``, see docs/plugins.md) are loaded
    first and applied last, unless ``plugins.disabled`` names them.

    Raises:
        ConfigurationError: a setting is invalid, the app already has the toolkit, or a
            plugin failed to load or apply.
    """
    if not isinstance(app, Starlette):
        raise ConfigurationError(
            f"install() needs a Starlette or FastAPI app, got {type(app).__name__}; add "
            "TelemetryMiddleware and RateLimitMiddleware to other ASGI apps directly"
        )
    if getattr(app.state, "toolkit", None) is not None:
        raise ConfigurationError("install() was already called on this app; call it once")
    settings = settings or ToolkitSettings()
    # Before anything is wired: a plugin that cannot load fails the startup on a clean app.
    plugins = load_plugins(settings.plugins)
    status = None
    if settings.status.enabled:
        # Traces are kept in process only when no collector receives them.
        keep_traces = settings.status.traces and settings.telemetry.otlp_endpoint is None
        status = StatusBoard(settings.status, traces=keep_traces)
    telemetry = setup_telemetry(
        settings.telemetry,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        span_processors=status.span_processors if status is not None else (),
    )
    backend = backend_from_settings(settings.backend, meter_provider=telemetry.meter_provider)
    store = flag_store_from_settings(settings, backend, meter_provider=telemetry.meter_provider)
    flags: FlagSource = store
    if settings.flags.source == "openfeature":
        from toolkit.flags.openfeature import OpenFeatureFlags

        flags = OpenFeatureFlags()
    set_current_store(store)
    set_current_flags(flags if flags is not store else None)
    cache = cache_store_from_settings(
        settings.cache, backend, meter_provider=telemetry.meter_provider
    )
    set_current_cache(cache)
    breakers = BreakerRegistry(
        backend, settings=settings.resilience, meter_provider=telemetry.meter_provider
    )
    set_current_breakers(breakers)
    set_current_agent_telemetry(
        AgentTelemetry(
            settings.agents,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
        )
    )
    set_current_fanout_telemetry(
        FanoutTelemetry(
            tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
        )
    )
    toolkit = Toolkit(
        settings, backend, telemetry, flags, store, cache, breakers, status=status, plugins=plugins
    )
    toolkit._offload = OffloadPool(
        settings.offload,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    set_current_offload_pool(toolkit._offload)
    for pool in pools:
        toolkit.add_pool(pool)
    toolkit.deferred = deferred_runner(
        settings,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    set_current_runner(toolkit.deferred)
    if status is not None:
        status.add_section("caches", cache_rows(cache))
        status.add_section("breakers", breaker_rows(breakers))
        status.add_section("pools", pool_rows(toolkit.pools))
    if settings.event_loop.enabled:
        toolkit.loop_monitor = LoopMonitor(
            settings=settings.event_loop,
            flags=flags,
            lag_window=settings.status.window,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
        )
    if status is not None:
        status.loop_monitor = toolkit.loop_monitor
        status.read_sampler(telemetry.tracer_provider)

    metrics_path = settings.telemetry.metrics_path
    serves_metrics = telemetry.prometheus_registry is not None
    ratelimit = settings.ratelimit
    if serves_metrics:
        ratelimit = ratelimit.model_copy(update={"exempt": [*ratelimit.exempt, metrics_path]})

    # add_middleware puts each new middleware outside the previous ones: innermost first.
    app.add_middleware(
        ResponseCacheMiddleware,
        settings=settings.cache,
        cache=cache,
        flags=flags,
        trusted_proxies=settings.ratelimit.trusted_proxies,
        proxy_header=settings.ratelimit.proxy_header,
    )
    # The app's slowapi Limiter (app.state.limiter), if it has one, read when the app starts.
    app.add_middleware(
        installed_slowapi_limits,
        application=app,
        settings=ratelimit,
        backend=backend,
        flags=flags,
        meter_provider=telemetry.meter_provider,
    )
    app.add_middleware(
        RateLimitMiddleware,
        settings=ratelimit,
        backend=backend,
        flags=flags,
        meter_provider=telemetry.meter_provider,
    )
    # Inside telemetry, so a 504 is on the server span; outside the rest, which it bounds.
    app.add_middleware(
        DeadlineMiddleware,
        settings=settings.deadline,
        flags=flags,
        meter_provider=telemetry.meter_provider,
    )
    app.add_middleware(
        TelemetryMiddleware,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        flags=flags,
        excluded_paths=[
            *settings.telemetry.excluded_paths,
            *([metrics_path] * serves_metrics),
            *admin_paths(settings.admin),  # an operator's polling is not the app's traffic
        ],
        status=status,
    )
    # Outermost: each request pins the flag snapshot it started with, for its whole life.
    app.add_middleware(FlagContextMiddleware, store=store)
    if telemetry.prometheus_registry is not None:
        toolkit._exposition = MetricsExposition(telemetry.prometheus_registry, settings.telemetry)
        app.router.add_route(
            metrics_path,
            _metrics_endpoint(toolkit._exposition),
            methods=["GET"],
            include_in_schema=False,
        )
    if settings.admin.any_token:
        # First, so that no catch-all route of the app can hide the admin routes.
        admin = admin_routes(store, settings.admin, cache=cache, status=status)
        app.router.routes.insert(0, admin)
    if PoolError not in app.exception_handlers:
        app.add_exception_handler(PoolError, pool_unavailable)
    if CircuitOpenError not in app.exception_handlers:
        app.add_exception_handler(CircuitOpenError, circuit_open)
    if DeferRefused not in app.exception_handlers:
        app.add_exception_handler(DeferRefused, defer_refused)
    app.router.lifespan_context = _with_toolkit(app.router.lifespan_context, toolkit)
    app.state.toolkit = toolkit
    plugins.apply(
        PluginContext(
            app=app,
            settings=settings,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            backend=backend,
            flags=flags,
            cache=cache,
            breakers=breakers,
        )
    )
    return toolkit


# The exposition formats' versions are dotted numbers; prometheus_client's negotiation
# compares whatever follows "version=" as one and fails on anything else ("version=a").
_FORMAT_VERSION = re.compile(r"(?:[0-9]{1,9}(?:\.[0-9]{1,9}){0,3})?")
_FORMATS = frozenset({"application/openmetrics-text", "text/plain"})


def _metrics_endpoint(exposition: MetricsExposition) -> Callable[[Request], Any]:
    async def metrics_endpoint(request: Request) -> Response:
        accept = request.headers.get("accept", "")
        for media_range in accept.split(","):
            media_type, *parameters = media_range.split(";")
            if media_type.strip() not in _FORMATS:
                continue
            for parameter in parameters:
                name, _, value = parameter.strip().partition("=")
                if name == "version" and not _FORMAT_VERSION.fullmatch(value.strip()):
                    return problem_response(
                        406,
                        f"Accept: {media_type.strip()}; version={value.strip()[:20]!r} is not "
                        "a version; ask for application/openmetrics-text; version=1.0.0 or "
                        "text/plain; version=0.0.4, or send no Accept",
                    )
        encoder, content_type = choose_encoder(accept)
        body = await exposition.render(encoder)
        return Response(body, headers={"content-type": content_type})

    return metrics_endpoint


def _with_toolkit(
    lifespan: Callable[[Any], AbstractAsyncContextManager[Any]], toolkit: Toolkit
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """The app's lifespan, with the toolkit started before it and stopped after it."""

    @asynccontextmanager
    async def toolkit_lifespan(app: Any) -> AsyncIterator[Any]:
        await toolkit.startup()
        try:
            async with lifespan(app) as state:
                try:
                    yield state
                finally:
                    # Before the app's own shutdown closes the clients its tasks use.
                    await toolkit.drain_deferred()
        finally:
            await toolkit.shutdown()

    return toolkit_lifespan
