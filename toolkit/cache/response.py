"""The response cache: answers repeated requests from the cache, before the app runs.

    app.add_middleware(ResponseCacheMiddleware, routes={"/answers/{id}": {"ttl": "10m"}})

    @app.get("/catalog")
    @toolkit.cache.cached_response(ttl="5m", public=True, tags=["catalog"])
    async def catalog(): ...

Nothing is cached unless its route opts in. The server's policy alone decides what is served
and stored: request headers such as ``Cache-Control``, ``Pragma`` or ``Clear-Site-Data`` change
nothing, and the only way to purge is :func:`toolkit.cache.invalidate` (or the admin route).

This module holds the middleware: its setup, the request path up to a hit, and its lifecycle.
The rest is in rooms of its own: route setup and :func:`cached_response` in ``_routes``, a
miss (single flight, the origin, storing) in ``_origin``, stale-while-revalidate in
``_refresh``, the ASGI helpers in ``_asgi``, the response capture in ``_capture``, GET
content in ``_content``, the stored form in ``_entry``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from opentelemetry import metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolkit._configured import configured
from toolkit._default import DEFAULT, Default
from toolkit._deprecated import renamed_argument
from toolkit._paths import PathMatcher, route_path
from toolkit.backends import Backend, backend_from_url
from toolkit.cache._asgi import HIT, STALE, labelled, read_body, replaying, send_entry
from toolkit.cache._capture import BYPASS
from toolkit.cache._content import has_content, read_content, refuse_content
from toolkit.cache._current import current_cache
from toolkit.cache._entry import NAME, readable
from toolkit.cache._keys import CALLER_HOOK, CREDENTIALS, canonical_query, digest_key
from toolkit.cache._origin import PASS_TTL, REFUSALS_BEFORE_PASSING, Flight, Origin
from toolkit.cache._refresh import MAX_REFRESHES, Refreshes
from toolkit.cache._routes import MARKER, Route, RouteTable, cached_response, route_table
from toolkit.cache._setup import cache_store_from_settings
from toolkit.cache._store import CacheStore
from toolkit.errors import BackendError, ConfigurationError
from toolkit.flags import CACHE_RESPONSE, FlagSource, current_flags
from toolkit.identity import (
    DEFAULT_PROXY_HEADER,
    CallerFunction,
    CallerResolver,
    ClientAddress,
    IPNetwork,
)
from toolkit.settings import CacheRouteSettings, CacheSettings, ProxyHeader
from toolkit.telemetry import names

__all__ = [
    "KEY_VERSION",
    "MARKER",
    "MAX_REFRESHES",
    "NAME",
    "PASS_TTL",
    "REFUSALS_BEFORE_PASSING",
    "ResponseCacheMiddleware",
    "cached_response",
]

KEY_VERSION: Final = 1
"""Part of every key: a change of what the key covers takes a new version, so that entries
keyed the old way are never read as the new way's."""


class ResponseCacheMiddleware:
    """Serves the responses of opted-in routes from the cache; pure ASGI.

    Sits between the rate limiter and the app. A request to a cached route (``routes`` or an
    endpoint marked with :func:`cached_response`) is keyed by its method, route, path,
    canonical query, ``Host``, JSON body (``body`` routes), the caller (unless the route is
    public) and the route's ``vary`` headers, all hashed. A fresh entry is sent with
    ``X-Cache: HIT`` and ``Age`` after one backend read, without running the app. On a miss
    one caller in the whole fleet runs the app (a lease in the backend, renewed while it
    runs); its response streams to its client as it is produced, and is stored afterwards if
    it may be: the whole body arrived, within ``max_body_bytes``, the app returned without
    error, the status is one of the route's, and it has no ``Set-Cookie``, no
    ``Cache-Control: private / no-store / no-cache``, and no ``Vary`` on a header the key does
    not cover. Other callers of the key wait for it and get the stored response; they go on
    the moment it is stored (never waiting for the leader's client) or known not to be; one
    whose deadline (a request budget) runs out first raises
    :class:`~toolkit.errors.DeadlineExceeded`, answered 504 by the deadline middleware. A
    GET or HEAD with content on a route that does not key on the body is answered 400.

    Request headers never change what is served or stored; when the backend fails, requests
    go to the app (``X-Cache: BYPASS``) and are never failed by the cache. Each decision is
    counted in ``toolkit.cache.requests`` and added to the current span. The ``cache.response``
    flag, when off, sends every request straight to the app, untouched.

    Its options are the fields of :class:`~toolkit.settings.CacheSettings`; one left at
    ``DEFAULT`` takes its value from ``settings`` (the built-in defaults when None).

    Args:
        routes: route template or path pattern -> route settings (``{"ttl": "10m"}``).
        caller: whose response it is on non-public routes: the ``Authorization`` and
            ``Cookie`` values when None (the setting's default); ``"api_key"``,
            ``"header:<Name>"``, ``"client"``, or a function of the ASGI scope (sync or
            async) returning the caller; see :mod:`toolkit.identity`. A function that raises
            makes the request uncacheable (``BYPASS``), never shared. ``identity=`` is its
            old name, deprecated.
        cache: the cache store; ``toolkit.cache.current_cache()`` when None and no
            ``backend`` is given (the one :func:`toolkit.install` set up, which
            :func:`toolkit.cache.invalidate` reaches). ``store=`` is its old name, deprecated.
        backend: a backend URL or :class:`Backend` for a cache store of this middleware's
            own (instead of ``cache``), connected and closed with the app's lifespan.
            ``storage=`` is its old name, deprecated.
        trusted_proxies / proxy_header: the proxies whose header (``X-Forwarded-For`` unless
            ``proxy_header`` names another) is believed, for the ``"client"`` caller; see
            :class:`~toolkit.identity.ClientAddress`.
        settings: a whole settings section; options given override its fields.
        flags: asked for ``cache.response`` per request; the current store when None.
        meter_provider: for a store this middleware creates; the global provider when None.
        clock: wall-clock seconds, shared by processes (``Age``, freshness); for tests.

    Raises:
        ConfigurationError: an invalid option, or both ``cache`` and ``backend``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[str, CacheRouteSettings | Mapping[str, Any]] | Default = DEFAULT,
        caller: str | CallerFunction | Default | None = DEFAULT,
        cache: CacheStore | None = None,
        backend: str | Backend | None = None,
        max_body_bytes: int | Default = DEFAULT,
        max_request_body_bytes: int | Default = DEFAULT,
        lease: float | str | Default = DEFAULT,
        wait: float | str | Default = DEFAULT,
        local_entries: int | Default = DEFAULT,
        local_ttl: float | str | Default = DEFAULT,
        trusted_proxies: Iterable[IPNetwork | str] = (),
        proxy_header: ProxyHeader = DEFAULT_PROXY_HEADER,
        settings: CacheSettings | None = None,
        flags: FlagSource | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        clock: Callable[[], float] = time.time,
        identity: str | CallerFunction | None = None,
        store: CacheStore | None = None,
        storage: str | Backend | None = None,
    ) -> None:
        self.app = app
        where = "ResponseCacheMiddleware"
        caller = renamed_argument(where, "identity", identity, "caller", caller)
        cache = renamed_argument(where, "store", store, "cache", cache)
        backend = renamed_argument(where, "storage", storage, "backend", backend)
        if cache is not None and backend is not None:
            raise ConfigurationError(
                f"{where}(cache=..., backend=...): a store to use, or a backend to build one "
                "of its own on; pass one of them"
            )
        settings = configured(
            where,
            CacheSettings,
            settings,
            {
                "routes": routes,
                "caller": caller,
                "max_body_bytes": max_body_bytes,
                "max_request_body_bytes": max_request_body_bytes,
                "lease": lease,
                "wait": wait,
                "local_entries": local_entries,
                "local_ttl": local_ttl,
            },
        )
        self.settings = settings

        self._owned: Backend | None = None
        if backend is not None:
            if isinstance(backend, str):
                backend = backend_from_url(backend, meter_provider=meter_provider)
            cache = cache_store_from_settings(settings, backend, meter_provider=meter_provider)
            self._owned = backend
        self.store = cache or current_cache()
        flight = Flight(self.store.backend, lease=settings.lease, wait=settings.wait)
        self._origin = Origin(
            app, self.store, flight, max_body=settings.max_body_bytes, clock=clock
        )
        self._refreshes = Refreshes(
            self._origin, flight, self.store.backend, wait=settings.wait, clock=clock
        )
        self._flags = flags
        self._clock = clock
        self._max_request_body = settings.max_request_body_bytes
        # A failing caller function must never put two callers under one entry: no caller,
        # the request bypasses the cache, rather than the client address (a proxy's, maybe).
        self._caller = CallerResolver(
            settings.caller or CREDENTIALS,
            ClientAddress(tuple(trusted_proxies), header=proxy_header),
            hook=CALLER_HOOK,
            on_error="none",
        )
        # The default caller's headers are in the key itself (see _routes.prepare), unresolved.
        self._by_credentials = self._caller.spec is CREDENTIALS
        self.store.caller = self._caller  # @cached(per_caller=True) tells callers apart alike
        # Marked endpoints are read when the app is first seen: routes are declared after the
        # middleware is added (settings' routes were checked by the settings model).
        self._configured = tuple(settings.routes.items())
        self._paths: PathMatcher | None = None  # None: no route is cached
        self._routes: RouteTable = {}
        self._resolved = False

    # --- the request path ----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                if not self._resolved:
                    self._resolve(scope.get("app"))
                receive = self._lifespan_receive(receive)
            await self.app(scope, receive, send)
            return
        if not self._resolved:
            self._resolve(scope.get("app"))
        if self._paths is None:
            await self.app(scope, receive, send)
            return
        pattern = self._paths.match(route_path(scope))
        route = None if pattern is None else self._routes[pattern].get(scope["method"])
        if route is None or not (self._flags or current_flags()).is_enabled(CACHE_RESPONSE):
            await self.app(scope, receive, send)
            return

        body: bytes | None = None
        if route.body:
            received, body = await read_body(receive, self._max_request_body)
            receive = replaying(received, receive)
            if body is None:  # too large, not JSON, or the client left: not keyable
                await self._bypass(scope, receive, send, None)
                return
        else:
            content = has_content(scope)
            if content is None:  # chunked, or HTTP/2: only the body itself tells
                received, content = await read_content(receive)
                receive = replaying(received, receive)
            if content:  # see toolkit/cache/_content.py: never keyed, never a way past us
                self.store.record(NAME, names.CACHE_REFUSED, None)
                await refuse_content(scope, receive, send)
                return
        key = await self._key(route, scope, body)
        if key is None:
            await self._bypass(scope, receive, send, None)
            return

        store = self.store
        local = store.local
        raw = None if local is None else local.get(key)
        from_backend = raw is None
        if raw is None:
            try:
                raw = await store.get(key)
            except BackendError:
                store.record(NAME, names.CACHE_ERROR, key)
                await self.app(scope, receive, labelled(send, BYPASS))
                return
        if raw is not None:
            entry = readable(raw)
            if entry is not None and not entry.is_pass:  # a pass in the key: an older version's
                age = self._clock() - entry.stored_at
                if age < entry.ttl:
                    if from_backend and local is not None:
                        store.remember(key, raw, entry.ttl - age)
                    store.record(NAME, names.CACHE_HIT, key)
                    scope["route"] = route.label
                    await send_entry(send, entry, HIT, age)
                    return
                if age < entry.ttl + entry.stale:
                    store.record(NAME, names.CACHE_STALE, key)
                    scope["route"] = route.label
                    self._refreshes.start(route, key, scope, body)
                    await send_entry(send, entry, STALE, age)
                    return
        await self._origin.miss(route, key, scope, receive, send)

    async def _key(self, route: Route, scope: Scope, body: bytes | None) -> str | None:
        """The request's storage key, or None when the request cannot be keyed safely."""
        slots = route.slots
        picked: list[tuple[int, bytes]] = []
        for name, value in scope["headers"]:
            slot = slots.get(name)
            if slot is not None:
                picked.append((slot, value))
        if len(picked) > 1:
            picked.sort(key=_slot_of)  # stable: repeated headers keep their order
        identity: str | None = ""
        if not route.public and not self._by_credentials:
            caller = self._caller
            identity = await caller(scope) if caller.is_async else caller.resolve(scope)
            if identity is None:
                return None
        return digest_key(
            NAME,
            (
                KEY_VERSION,
                route.pattern,
                scope["method"],
                scope.get("scheme", "http"),
                scope.get("root_path", ""),
                scope["path"],
                canonical_query(scope.get("query_string", b"")),
                body,
                identity,
                picked,
            ),
        )

    async def _bypass(self, scope: Scope, receive: Receive, send: Send, key: str | None) -> None:
        self.store.record(NAME, names.CACHE_BYPASS, key)
        await self.app(scope, receive, labelled(send, BYPASS))

    # --- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Cancel background refreshes, and stop a store this middleware created. The app's
        lifespan shutdown calls it."""
        await self._refreshes.aclose()
        if self._owned is not None:
            await self.store.stop()
            await self._owned.close()

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and self._owned is not None:
                await self._owned.connect()
                await self.store.start()
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
            return message

        return lifespan_receive

    def _resolve(self, application: Any) -> None:
        """Build the route table (see :func:`~toolkit.cache._routes.route_table`)."""
        self._routes = route_table(self._configured, application, self._by_credentials)
        self._paths = PathMatcher(self._routes) if self._routes else None
        self._resolved = True


def _slot_of(item: tuple[int, bytes]) -> int:
    return item[0]
