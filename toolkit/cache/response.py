"""The response cache: answers repeated requests from the cache, before the app runs.

    app.add_middleware(ResponseCacheMiddleware, routes={"/answers/{id}": {"ttl": "10m"}})

    @app.get("/catalog")
    @toolkit.cache.cached_response(ttl="5m", public=True, tags=["catalog"])
    async def catalog(): ...

Nothing is cached unless its route opts in. The server's policy alone decides what is served
and stored: request headers such as ``Cache-Control``, ``Pragma`` or ``Clear-Site-Data`` change
nothing, and the only way to purge is :func:`toolkit.cache.invalidate` (or the admin route).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from opentelemetry import metrics, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolkit._paths import PathMatcher, route_endpoints
from toolkit.backends import Backend, backend_from_url
from toolkit.cache._current import current_cache
from toolkit.cache._entry import Entry, decode, encode, encode_pass
from toolkit.cache._keys import canonical_json, canonical_query, digest_key
from toolkit.cache._singleflight import SingleFlight
from toolkit.cache._store import CacheStore, LocalTier
from toolkit.errors import BackendError, ConfigurationError
from toolkit.flags import CACHE_RESPONSE, FlagSource, current_store
from toolkit.identity import ClientAddress, KeyFunction, KeyResolver
from toolkit.settings import CacheRouteSettings, CacheSettings, IPNetwork, validate_arguments
from toolkit.telemetry import names

logger = logging.getLogger("toolkit.cache")

NAME: Final = "response"
"""``toolkit.cache.name`` of this cache, and the namespace of its keys."""
MARKER: Final = "__toolkit_cached_response__"
"""The attribute :func:`cached_response` sets on an endpoint."""
PASS_TTL: Final = 10.0
"""Seconds a key whose response could not be stored sends callers straight to the origin
(at most the route's ttl), instead of queueing them behind one another."""
MAX_REFRESHES: Final = 64
"""Background refreshes (stale-while-revalidate) running at once per process; past it, a
stale entry is served without starting another, and refreshed on a later request."""
KEY_VERSION: Final = 1

CACHEABLE_STATUSES: Final = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
"""Statuses a route may list: those RFC 9110 (15.1) lets caches reuse. 206 (a byte range) and
304 (a conditional answer) describe one request only."""
CACHEABLE_METHODS: Final = frozenset({"GET", "HEAD", "POST"})

_X_CACHE = b"x-cache"
_AGE = b"age"
_HIT = (_X_CACHE, b"HIT")
_STALE = (_X_CACHE, b"STALE")
_MISS = (_X_CACHE, b"MISS")
_BYPASS = (_X_CACHE, b"BYPASS")
# The app's own values of these are dropped (x-cache always; age from stored copies, since the
# cache's Age replaces it on replay): no response ever carries two.
_OWN = frozenset({_X_CACHE, _AGE})
_REFUSING_DIRECTIVES = frozenset({b"private", b"no-store", b"no-cache"})

# Header slots that are not part of the key: a request body the key does not cover.
_CONTENT_LENGTH = -1
_TRANSFER_ENCODING = -2

F = TypeVar("F", bound=Callable[..., Any])


def cached_response(
    *,
    ttl: str | float,
    public: bool = False,
    vary: Sequence[str] = (),
    body: bool = False,
    stale_while_revalidate: str | float = 0,
    tags: Sequence[str] = (),
    methods: Sequence[str] | None = None,
    statuses: Sequence[int] | None = None,
) -> Callable[[F], F]:
    """Mark an endpoint's responses as cacheable; :class:`ResponseCacheMiddleware` reads the
    mark when the app starts. The endpoint itself is returned unchanged.

        @app.get("/answers/{id}")
        @cached_response(ttl="10m", tags=["answers"])
        async def answer(id: str): ...

    Args:
        ttl: how long a response is served from cache: seconds or ``"10m"``.
        public: the same response for every caller; leaves the caller's identity out of the
            key. Leave False for anything that depends on who asks.
        vary: request headers whose values select the response (part of the key).
        body: key on the JSON request body (canonical form, hashed); needed to cache POST.
        stale_while_revalidate: after ``ttl``, serve the old response this long while one
            caller in the fleet refreshes it in the background.
        tags: for :func:`toolkit.cache.invalidate`.
        methods: methods cached; GET and HEAD (and POST when ``body``) when None.
        statuses: statuses stored; 200 when None.

    Raises:
        ConfigurationError: an argument is invalid (named in the message).
    """
    values: dict[str, Any] = {
        "ttl": ttl,
        "public": public,
        "vary": list(vary),
        "body": body,
        "stale_while_revalidate": stale_while_revalidate,
        "tags": list(tags),
    }
    if methods is not None:
        values["methods"] = list(methods)
    if statuses is not None:
        values["statuses"] = list(statuses)
    settings = validate_arguments(CacheRouteSettings, values)
    _check_route(settings, "cached_response()")

    def mark(endpoint: F) -> F:
        setattr(endpoint, MARKER, settings)
        return endpoint

    return mark


class _RouteLabel:
    """Stands in for the router's match in ``scope["route"]`` when a hit answers before the
    router runs, so the telemetry outside still names the route (it reads ``path_format``)."""

    __slots__ = ("path_format",)

    def __init__(self, path_format: str) -> None:
        self.path_format = path_format


@dataclass(frozen=True, slots=True, eq=False)  # identity hash and equality: cheap per request
class _Route:
    """One cached route, prepared: what the key covers and what may be stored."""

    pattern: str
    ttl: float
    stale: float
    public: bool
    body: bool
    tags: tuple[str, ...]
    statuses: frozenset[int]
    methods: frozenset[str]
    slots: dict[bytes, int]
    """Request header name -> its slot in the key; negative: a body the key does not cover."""
    accepted_vary: frozenset[bytes]
    """Header names a response's ``Vary`` may list: those the key covers."""
    label: _RouteLabel


def _check_route(settings: CacheRouteSettings, where: str) -> frozenset[str]:
    """The methods cached for these settings; raises ConfigurationError naming ``where``."""
    methods = {m.upper() for m in settings.methods}
    if settings.body and "methods" not in settings.model_fields_set:
        methods.add("POST")
    unknown = sorted(methods - CACHEABLE_METHODS)
    if unknown:
        raise ConfigurationError(
            f"{where}: methods {unknown} are never cached (they change state); cache GET, "
            "HEAD, or POST with body=true"
        )
    if "POST" in methods and not settings.body:
        raise ConfigurationError(
            f"{where}: POST responses are cached only with body=true, which puts the JSON "
            "request body in the key"
        )
    if settings.ttl <= 0:
        raise ConfigurationError(f"{where}: ttl must be positive, got {settings.ttl}")
    if settings.stale_while_revalidate < 0:
        raise ConfigurationError(
            f"{where}: stale_while_revalidate must be 0 or more, got "
            f"{settings.stale_while_revalidate}"
        )
    refused = sorted(set(settings.statuses) - CACHEABLE_STATUSES)
    if refused:
        raise ConfigurationError(
            f"{where}: statuses {refused} cannot be stored; choose among "
            f"{sorted(CACHEABLE_STATUSES)}"
        )
    return frozenset(methods)


def _prepare(
    pattern: str, settings: CacheRouteSettings, methods: frozenset[str], default_identity: bool
) -> _Route:
    keyed = [b"host"]  # apps build absolute links from it: a forged Host must not share entries
    if settings.body:
        keyed.append(b"content-type")
    if default_identity and not settings.public:
        keyed += [b"authorization", b"cookie"]  # the default identity: who is asking
    keyed += [name.encode("latin-1") for name in settings.vary]
    slots: dict[bytes, int] = {}
    for name in keyed:
        slots.setdefault(name, len(slots))
    if not settings.body:
        slots[b"content-length"] = _CONTENT_LENGTH
        slots[b"transfer-encoding"] = _TRANSFER_ENCODING
    return _Route(
        pattern=pattern,
        ttl=settings.ttl,
        stale=settings.stale_while_revalidate,
        public=settings.public,
        body=settings.body,
        tags=tuple(settings.tags),
        statuses=frozenset(settings.statuses),
        methods=methods,
        slots=slots,
        accepted_vary=frozenset(name for name, slot in slots.items() if slot >= 0),
        label=_RouteLabel(pattern),
    )


class _Identity:
    """Whose response it is: the configured key, or the caller's function. A function that
    raises makes the request uncacheable (recorded on the span); it never falls back to a
    shared identity such as the client address behind a proxy."""

    __slots__ = ("_client", "_function", "_resolver", "is_async")

    def __init__(self, spec: str | KeyFunction, client: ClientAddress) -> None:
        self._client = client
        self._resolver: KeyResolver | None = None
        self._function: Any = None
        if callable(spec):
            self._function = spec
            self.is_async = inspect.iscoroutinefunction(spec) or inspect.iscoroutinefunction(
                getattr(spec, "__call__", None)  # noqa: B004 - async callable objects
            )
        else:
            self._resolver = KeyResolver(spec, client, hook="cache.identity")
            self.is_async = False

    def resolve(self, scope: Scope) -> str | None:
        if self._resolver is not None:
            return self._resolver.resolve(scope)
        try:
            value = self._function(scope)
        except Exception as exc:  # a user hook must never fail the request
            _record_hook_failure(exc)
            return None
        return self._identity(value, scope)

    async def aresolve(self, scope: Scope) -> str | None:
        try:
            value = await self._function(scope)
        except Exception as exc:  # a user hook must never fail the request
            _record_hook_failure(exc)
            return None
        return self._identity(value, scope)

    def _identity(self, value: object, scope: Scope) -> str:
        # As KeyResolver: a function's None means "no identity", keyed by the client address.
        return f"custom:{value}" if value else f"client:{self._client(scope)}"


def _record_hook_failure(exc: Exception) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(exc, attributes={names.HOOK: "cache.identity"})


class _Served:
    """What a single-flight leader returns: it answered its own caller from the origin."""


_SERVED: Final = _Served()


class ResponseCacheMiddleware:
    """Serves the responses of opted-in routes from the cache; pure ASGI.

    Sits between the rate limiter and the app. A request to a cached route (``routes`` or an
    endpoint marked with :func:`cached_response`) is keyed by its method, route, path,
    canonical query, ``Host``, JSON body (``body`` routes), the caller's identity (unless the
    route is public) and the route's ``vary`` headers, all hashed. A fresh entry is sent with
    ``X-Cache: HIT`` and ``Age`` after one backend read, without running the app. On a miss
    one caller in the whole fleet runs the app (a lease in the backend, renewed while it
    runs); its response streams to its client as it is produced, and is stored afterwards if
    it may be: the whole body arrived, within ``max_body_bytes``, the app returned without
    error, the status is one of the route's, and it has no ``Set-Cookie``, no
    ``Cache-Control: private / no-store / no-cache``, and no ``Vary`` on a header the key does
    not cover. Other callers of the key wait for it and get the stored response.

    Request headers never change what is served or stored; when the backend fails, requests
    go to the app (``X-Cache: BYPASS``) and are never failed by the cache. Each decision is
    counted in ``toolkit.cache.requests`` and added to the current span. The ``cache.response``
    flag, when off, sends every request straight to the app, untouched.

    Keyword arguments are the fields of :class:`~toolkit.settings.CacheSettings` and take
    their defaults from it.

    Args:
        routes: route template or path pattern -> route settings (``{"ttl": "10m"}``).
        identity: whose response it is on non-public routes: the ``Authorization`` and
            ``Cookie`` values when None; ``"api_key"``, ``"header:<Name>"``, ``"client"``, or a
            function of the ASGI scope (sync or async) returning an identity.
        store: the cache store; ``toolkit.cache.current_cache()`` when neither it nor
            ``storage`` is given (the one :func:`toolkit.install` set up, which
            :func:`toolkit.cache.invalidate` reaches).
        storage: a backend URL or :class:`Backend` for a store of this middleware's own,
            connected and closed with the app's lifespan.
        trusted_proxies: proxies whose ``X-Forwarded-For`` is believed, for the ``"client"``
            identity.
        settings: a whole settings section; keyword arguments override its fields.
        flags: asked for ``cache.response`` per request; the current store when None.
        meter_provider: for a store this middleware creates.
        clock: wall-clock seconds, shared by processes (``Age``, freshness); for tests.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[str, CacheRouteSettings | Mapping[str, Any]] | None = None,
        identity: str | KeyFunction | None = None,
        store: CacheStore | None = None,
        storage: str | Backend | None = None,
        max_body_bytes: int | None = None,
        max_request_body_bytes: int | None = None,
        lease: float | str | None = None,
        wait: float | str | None = None,
        local_entries: int | None = None,
        local_ttl: float | str | None = None,
        trusted_proxies: Iterable[IPNetwork | str] = (),
        settings: CacheSettings | None = None,
        flags: FlagSource | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        overrides = {
            name: value
            for name, value in (
                ("routes", routes),
                ("identity", None if callable(identity) else identity),
                ("max_body_bytes", max_body_bytes),
                ("max_request_body_bytes", max_request_body_bytes),
                ("lease", lease),
                ("wait", wait),
                ("local_entries", local_entries),
                ("local_ttl", local_ttl),
            )
            if value is not None
        }
        if settings is None or overrides:
            base = settings.model_dump(exclude_unset=True) if settings is not None else {}
            settings = validate_arguments(CacheSettings, {**base, **overrides})
        self.settings = settings

        self._owned: Backend | None = None
        if store is None and storage is not None:
            backend = (
                storage
                if isinstance(storage, Backend)
                else backend_from_url(storage, meter_provider=meter_provider)
            )
            local = (
                LocalTier(settings.local_entries, settings.local_ttl)
                if settings.local_entries
                else None
            )
            store = CacheStore(
                backend, local=local, meter_provider=meter_provider, settings=settings
            )
            self._owned = backend
        self.store = store or current_cache()
        self._flight = SingleFlight[Entry | _Served](
            self.store.backend, lease=settings.lease, wait=settings.wait
        )
        self._flags = flags
        self._clock = clock
        self._max_body = settings.max_body_bytes
        self._max_request_body = settings.max_request_body_bytes
        spec: str | KeyFunction | None = identity if callable(identity) else settings.identity
        self._identity = (
            None if spec is None else _Identity(spec, ClientAddress(tuple(trusted_proxies)))
        )
        self.store.identity = self._identity  # @cached(per_caller=True) tells callers apart alike
        # Routes from settings are checked now (startup); marked endpoints when the app is
        # first seen, since routes are declared after the middleware is added.
        self._configured = [
            (pattern, route, _check_route(route, f"cache.routes[{pattern!r}]"))
            for pattern, route in settings.routes.items()
        ]
        self._paths = PathMatcher(())
        self._routes: dict[str, dict[str, _Route]] = {}
        self._resolved = False
        self._refreshes: dict[str, asyncio.Task[None]] = {}

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
        if not self._paths:
            await self.app(scope, receive, send)
            return
        pattern = self._paths.match(scope["path"])
        route = None if pattern is None else self._routes[pattern].get(scope["method"])
        if route is None or not (self._flags or current_store()).is_enabled(CACHE_RESPONSE):
            await self.app(scope, receive, send)
            return

        body: bytes | None = None
        if route.body:
            received, body = await _read_body(receive, self._max_request_body)
            receive = _replaying(received, receive)
            if body is None:  # too large, not JSON, or the client left: not keyable
                await self._bypass(scope, receive, send, None)
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
                await self.app(scope, receive, _labelled(send, _BYPASS))
                return
        if raw is not None:
            entry = _readable(raw)
            if entry is not None:
                if entry.is_pass:
                    await self._bypass(scope, receive, send, key)
                    return
                age = self._clock() - entry.stored_at
                if age < entry.ttl:
                    if from_backend and local is not None:
                        store.remember(key, raw, entry.ttl - age)
                    store.record(NAME, names.CACHE_HIT, key)
                    scope.setdefault("route", route.label)
                    await _send_entry(send, entry, _HIT, age)
                    return
                if age < entry.ttl + entry.stale:
                    store.record(NAME, names.CACHE_STALE, key)
                    scope.setdefault("route", route.label)
                    self._refresh_later(route, key, scope, body)
                    await _send_entry(send, entry, _STALE, age)
                    return
        await self._miss(route, key, scope, receive, send)

    async def _key(self, route: _Route, scope: Scope, body: bytes | None) -> str | None:
        """The request's storage key, or None when the request cannot be keyed safely."""
        slots = route.slots
        picked: list[tuple[int, bytes]] = []
        for name, value in scope["headers"]:
            slot = slots.get(name)
            if slot is None:
                continue
            if slot >= 0:
                picked.append((slot, value))
            elif slot == _TRANSFER_ENCODING or value.strip() != b"0":
                # A body on a route that does not key on it ("fat GET"): the app may read it,
                # so two such requests could share a key and not a response.
                return None
        if len(picked) > 1:
            picked.sort(key=_slot_of)  # stable: repeated headers keep their order
        identity: str | None = ""
        if not route.public and self._identity is not None:
            identity = (
                await self._identity.aresolve(scope)
                if self._identity.is_async
                else self._identity.resolve(scope)
            )
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

    async def _miss(
        self, route: _Route, key: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """One caller in the fleet runs the app; the others take what it stores."""

        async def lookup() -> Entry | None:
            try:
                raw = await self.store.get(key)
            except BackendError:
                return None
            entry = None if raw is None else _readable(raw)
            if entry is None or (
                not entry.is_pass and self._clock() - entry.stored_at >= entry.ttl + entry.stale
            ):
                return None
            return entry

        async def compute() -> Entry | _Served:
            # Leading now; a caller that led before us may have stored it since our read.
            found = await lookup()
            if found is not None:
                return found
            await self._origin(route, key, scope, receive, send)
            return _SERVED

        result = await self._flight.run(key, lookup, compute)
        if isinstance(result, _Served):
            return
        if result.is_pass:
            await self._bypass(scope, receive, send, key)
            return
        age = self._clock() - result.stored_at
        fresh = age < result.ttl
        self.store.record(NAME, names.CACHE_HIT if fresh else names.CACHE_STALE, key)
        scope.setdefault("route", route.label)
        await _send_entry(send, result, _HIT if fresh else _STALE, age)

    async def _origin(
        self, route: _Route, key: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Run the app for this caller, streaming as it goes, and store what may be stored."""
        capture = _Capture(send, route, self._max_body)
        try:
            await self.app(scope, receive, capture)
        finally:
            # A response refused mid-stream (too large) has said MISS already: counted as
            # what it turned out to be.
            result = names.CACHE_MISS if capture.refused is None else names.CACHE_BYPASS
            self.store.record(NAME, result, key)
        await self._keep(route, key, capture)

    async def _keep(self, route: _Route, key: str, capture: _Capture) -> None:
        """Store the captured response, or a pass marker when it may not be stored."""
        now = self._clock()
        if capture.refused is None and capture.complete:
            value = encode(
                capture.status,
                capture.headers,
                b"".join(capture.chunks),
                now,
                route.ttl,
                route.stale,
            )
            ttl = route.ttl + route.stale
        elif capture.passes:
            ttl = min(route.ttl, PASS_TTL)
            value = encode_pass(now, ttl)
        else:
            return
        with contextlib.suppress(BackendError):  # counted and traced by the backend
            await self.store.set(key, value, ttl, route.tags)

    async def _bypass(self, scope: Scope, receive: Receive, send: Send, key: str | None) -> None:
        self.store.record(NAME, names.CACHE_BYPASS, key)
        await self.app(scope, receive, _labelled(send, _BYPASS))

    # --- stale-while-revalidate ---------------------------------------------------------------

    def _refresh_later(self, route: _Route, key: str, scope: Scope, body: bytes | None) -> None:
        """Start refreshing ``key`` in the background, unless this process already is."""
        if key in self._refreshes or len(self._refreshes) >= MAX_REFRESHES:
            return
        request = dict(scope)
        state = scope.get("state")
        if isinstance(state, dict):
            request["state"] = dict(state)
        # A context of its own: the refresh outlives this request, its span and flag snapshot.
        task = asyncio.get_running_loop().create_task(
            self._refresh(route, key, request, body),
            name="toolkit.cache.refresh",
            context=contextvars.Context(),
        )
        self._refreshes[key] = task
        task.add_done_callback(lambda _: self._refreshes.pop(key, None))

    async def _refresh(self, route: _Route, key: str, scope: Scope, body: bytes | None) -> None:
        """Replay the request through the app and store the new response, if no one in the
        fleet is doing it already. Bounded by ``wait``; a failure leaves the stale entry to
        expire."""

        async def compute() -> _Served:
            # Another process may have refreshed it while we waited for the lease; read the
            # backend itself, not a local copy that may be the stale entry.
            found = (await self.store.backend.cache_get_many([key]))[0]
            entry = None if found is None else _readable(found)
            if entry is None or self._clock() - entry.stored_at >= entry.ttl:
                capture = _Capture(_discard, route, self._max_body)
                async with asyncio.timeout(self.settings.wait):
                    await self.app(scope, _one_request(body or b""), capture)
                await self._keep(route, key, capture)
            return _SERVED

        try:
            await self._flight.run_if_idle(key, compute)
        except BackendError:
            pass  # counted and traced by the backend; the stale entry serves until it expires
        except Exception:
            logger.warning("refreshing a stale response of %s failed", route.pattern, exc_info=True)

    # --- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Cancel background refreshes, and stop a store this middleware created. The app's
        lifespan shutdown calls it."""
        tasks = list(self._refreshes.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
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
        """Build the route table: configured routes, then marked endpoints. A configured
        template replaces every mark on it, so operators can retune or switch off a route's
        caching (``methods: ["HEAD"]``) without a deploy."""
        default_identity = self._identity is None
        table: dict[str, dict[str, _Route]] = {}
        for pattern, settings, methods in self._configured:
            route = _prepare(pattern, settings, methods, default_identity)
            table[pattern] = dict.fromkeys(methods, route)
        configured = set(table)
        for template, endpoint, route_methods in route_endpoints(
            getattr(application, "routes", ())
        ):
            marker = getattr(endpoint, MARKER, None)
            if not isinstance(marker, CacheRouteSettings) or template in configured:
                continue
            name = getattr(endpoint, "__qualname__", repr(endpoint))
            methods = _check_route(marker, f"@cached_response on {name} ({template})")
            if route_methods is not None:
                methods &= frozenset(route_methods)
            route = _prepare(template, marker, methods, default_identity)
            for method in methods:
                table.setdefault(template, {}).setdefault(method, route)
        self._routes = table
        self._paths = PathMatcher(table)
        self._resolved = True


class _Capture:
    """The ``send`` of a miss: forwards every message at once, keeps a copy of the response
    within the size cap, and decides at the response start whether it may be stored."""

    __slots__ = (
        "_limit",
        "_route",
        "_send",
        "chunks",
        "complete",
        "headers",
        "passes",
        "refused",
        "size",
        "status",
    )

    def __init__(self, send: Send, route: _Route, limit: int) -> None:
        self._send = send
        self._route = route
        self._limit = limit
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.refused: str | None = None
        """Why the response may not be stored; None while it may."""
        self.passes = False
        """Whether the refusal is the response's own doing (a pass marker is stored)."""

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if self.refused is None:
                chunk = message.get("body", b"")
                self.size += len(chunk)
                if self.size > self._limit:
                    self._refuse("size", passes=True)
                elif chunk:
                    self.chunks.append(bytes(chunk))
            if not message.get("more_body", False):
                self.complete = True
        elif kind == "http.response.start":
            self.status = message["status"]
            headers = [
                (bytes(name), bytes(value))
                for name, value in message.get("headers", ())
                if name.lower() not in _OWN
            ]
            self.headers = headers
            self._judge(message)
            message["headers"] = [*headers, _MISS if self.refused is None else _BYPASS]
        else:  # trailers, pathsend, zero-copy: not a body this cache can replay
            self._refuse(kind, passes=True)
        await self._send(message)

    def _refuse(self, reason: str, *, passes: bool) -> None:
        if self.refused is None:
            self.refused = reason
            self.passes = passes
            self.chunks = []

    def _judge(self, message: Message) -> None:
        route = self._route
        if self.status not in route.statuses:
            # Not the response's nature but this request's outcome (an error, a redirect):
            # no pass marker, the next caller tries again.
            self._refuse("status", passes=False)
            return
        if message.get("trailers", False):
            self._refuse("trailers", passes=True)
            return
        for name, value in self.headers:
            name = name.lower()
            if name == b"set-cookie":
                self._refuse("set-cookie", passes=True)
            elif name == b"cache-control":
                directives = {d.strip().partition(b"=")[0].strip() for d in value.split(b",")}
                if {d.lower() for d in directives} & _REFUSING_DIRECTIVES:
                    self._refuse("cache-control", passes=True)
            elif name == b"vary":
                # RFC 9111 4.1: a stored response matches only requests with the same values
                # of the headers Vary names; the key must cover them, and `*` matches nothing.
                listed = {f.strip().lower() for f in value.split(b",")} - {b""}
                if listed - route.accepted_vary:
                    self._refuse("vary", passes=True)
            elif name == b"content-length":
                length = value.strip()
                if length.isdigit() and int(length) > self._limit:
                    self._refuse("size", passes=True)
            if self.refused is not None:
                return


def _readable(raw: bytes) -> Entry | None:
    """The entry, or None when it is not one this version can read (a miss)."""
    try:
        return decode(raw)
    except ValueError:
        return None


def _slot_of(item: tuple[int, bytes]) -> int:
    return item[0]


async def _send_entry(send: Send, entry: Entry, label: tuple[bytes, bytes], age: float) -> None:
    headers = [*entry.headers, label, (_AGE, b"%d" % max(0, int(age)))]
    await send({"type": "http.response.start", "status": entry.status, "headers": headers})
    await send({"type": "http.response.body", "body": entry.body})


def _labelled(send: Send, label: tuple[bytes, bytes]) -> Send:
    """A ``send`` that adds ``X-Cache`` to the response start; the body passes as is."""

    async def send_labelled(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", ()) if h[0].lower() != _X_CACHE]
            message["headers"] = [*headers, label]
        await send(message)

    return send_labelled


async def _read_body(receive: Receive, limit: int) -> tuple[list[Message], bytes | None]:
    """The messages read and the request body in canonical form: the canonical JSON, or
    ``b""`` when there is no body. None for a body that cannot be keyed: over ``limit``, not
    JSON, or cut short by a disconnect (the messages are replayed to the app all the same)."""
    received: list[Message] = []
    size = 0
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return received, None
        size += len(message.get("body", b""))
        if size > limit:
            return received, None
        if not message.get("more_body", False):
            break
    raw = b"".join(m.get("body", b"") for m in received)
    if not raw:
        return received, b""
    try:
        return received, canonical_json(json.loads(raw))
    except (ValueError, TypeError, RecursionError):  # RecursionError: nesting too deep
        return received, None


def _replaying(received: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives the app what was read, then what follows."""
    pending = deque(received)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


def _one_request(body: bytes) -> Receive:
    """The ``receive`` of a replayed request: its body, then a client that never leaves."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # until the refresh ends and cancels whoever listens
        return {"type": "http.disconnect"}

    return receive


async def _discard(message: Message) -> None:
    del message
