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
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from opentelemetry import metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolkit._deprecated import renamed_argument
from toolkit._fallback import Computation, computing
from toolkit._paths import PathMatcher, route_endpoints, route_path
from toolkit.backends import Backend, backend_from_url
from toolkit.cache._capture import AGE as _AGE
from toolkit.cache._capture import BYPASS as _BYPASS
from toolkit.cache._capture import X_CACHE as _X_CACHE
from toolkit.cache._capture import Capture
from toolkit.cache._content import has_content, read_content, refuse_content
from toolkit.cache._current import current_cache
from toolkit.cache._entry import Entry, decode, encode, encode_pass
from toolkit.cache._keys import (
    CALLER_HOOK,
    CREDENTIAL_HEADERS,
    CREDENTIALS,
    canonical_json,
    canonical_query,
    digest_key,
)
from toolkit.cache._singleflight import SingleFlight, Turn
from toolkit.cache._store import CacheStore, LocalTier
from toolkit.errors import BackendError
from toolkit.flags import CACHE_RESPONSE, FlagSource, current_store
from toolkit.identity import CallerFunction, CallerResolver, ClientAddress
from toolkit.settings import (
    DEFAULT_PROXY_HEADER,
    CacheRouteSettings,
    CacheSettings,
    IPNetwork,
    ProxyHeader,
    validate_arguments,
    with_arguments,
)
from toolkit.telemetry import names

logger = logging.getLogger("toolkit.cache")

NAME: Final = "response"
"""``toolkit.cache.name`` of this cache, and the namespace of its keys."""
MARKER: Final = "__toolkit_cached_response__"
"""The attribute :func:`cached_response` sets on an endpoint."""
PASS_TTL: Final = 10.0
"""Seconds a key's note that a leader's response could not be stored is kept (at most the
route's ttl); see :data:`REFUSALS_BEFORE_PASSING`."""
REFUSALS_BEFORE_PASSING: Final = 2
"""Leaders in a row whose responses could not be stored by their nature (a Set-Cookie, a
size over the cap) that a caller waits for; after them it goes to the origin itself instead
of queueing behind the next one. After one, the next caller leads: its response may well
be stored (a CSRF cookie is set only for clients that have none)."""
MAX_REFRESHES: Final = 64
"""Background refreshes (stale-while-revalidate) running at once per process; past it, a
stale entry is served without starting another, and refreshed on a later request."""
KEY_VERSION: Final = 1

_HIT = (_X_CACHE, b"HIT")
_STALE = (_X_CACHE, b"STALE")

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
        public: the same response for every caller; leaves the caller out of the key. Leave
            False for anything that depends on who asks.
        vary: request headers whose values select the response (part of the key).
        body: key on the JSON request body (canonical form, hashed); needed to cache POST.
            A hit never runs the endpoint, so its side effects happen on misses only.
            Without it, a GET or HEAD with content is answered 400.
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

    def mark(endpoint: F) -> F:
        setattr(endpoint, MARKER, settings)
        return endpoint

    return mark


class _RouteLabel:
    """Stands in for the router's match in ``scope["route"]`` when a hit answers before the
    router runs, so the telemetry outside still names the route (it reads ``path_format``).
    It replaces what a parent app's router put there (its ``Mount`` of this app)."""

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
    """Request header name -> its slot in the key."""
    accepted_vary: frozenset[bytes]
    """Header names a response's ``Vary`` may list: those the key covers."""
    label: _RouteLabel


def _prepare(
    pattern: str, settings: CacheRouteSettings, methods: frozenset[str], by_credentials: bool
) -> _Route:
    keyed = [b"host"]  # apps build absolute links from it: a forged Host must not share entries
    if settings.body:
        keyed.append(b"content-type")
    if by_credentials and not settings.public:
        keyed += CREDENTIAL_HEADERS  # the default caller: who is asking
    keyed += [name.encode("latin-1") for name in settings.vary]
    slots: dict[bytes, int] = {}
    for name in keyed:
        slots.setdefault(name, len(slots))
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
        accepted_vary=frozenset(slots),
        label=_RouteLabel(pattern),
    )


class _Outcome:
    """What a single flight returns other than an entry."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_SERVED: Final = _Outcome("served")
"""This caller led: the origin answered it."""
_PASS: Final = _Outcome("pass")
"""Leaders in a row could not store their responses: go to the origin without waiting."""


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
    the moment it is stored (never waiting for the leader's client) or known not to be. A
    GET or HEAD with content on a route that does not key on the body is answered 400.

    Request headers never change what is served or stored; when the backend fails, requests
    go to the app (``X-Cache: BYPASS``) and are never failed by the cache. Each decision is
    counted in ``toolkit.cache.requests`` and added to the current span. The ``cache.response``
    flag, when off, sends every request straight to the app, untouched.

    Keyword arguments are the fields of :class:`~toolkit.settings.CacheSettings` and take
    their defaults from it.

    Args:
        routes: route template or path pattern -> route settings (``{"ttl": "10m"}``).
        caller: whose response it is on non-public routes: the ``Authorization`` and
            ``Cookie`` values when None; ``"api_key"``, ``"header:<Name>"``, ``"client"``, or a
            function of the ASGI scope (sync or async) returning the caller; see
            :mod:`toolkit.identity`. A function that raises makes the request uncacheable
            (``BYPASS``), never shared. ``identity=`` is its old name, deprecated.
        store: the cache store; ``toolkit.cache.current_cache()`` when neither it nor
            ``storage`` is given (the one :func:`toolkit.install` set up, which
            :func:`toolkit.cache.invalidate` reaches).
        storage: a backend URL or :class:`Backend` for a store of this middleware's own,
            connected and closed with the app's lifespan.
        trusted_proxies / proxy_header: the proxies whose header (``X-Forwarded-For`` unless
            ``proxy_header`` names another) is believed, for the ``"client"`` caller; see
            :class:`~toolkit.identity.ClientAddress`.
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
        caller: str | CallerFunction | None = None,
        store: CacheStore | None = None,
        storage: str | Backend | None = None,
        max_body_bytes: int | None = None,
        max_request_body_bytes: int | None = None,
        lease: float | str | None = None,
        wait: float | str | None = None,
        local_entries: int | None = None,
        local_ttl: float | str | None = None,
        trusted_proxies: Iterable[IPNetwork | str] = (),
        proxy_header: ProxyHeader = DEFAULT_PROXY_HEADER,
        settings: CacheSettings | None = None,
        flags: FlagSource | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        clock: Callable[[], float] = time.time,
        identity: str | CallerFunction | None = None,
    ) -> None:
        self.app = app
        caller = renamed_argument("ResponseCacheMiddleware", "identity", identity, "caller", caller)
        settings = with_arguments(
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
        self._flight = SingleFlight[Entry | _Outcome](
            self.store.backend, lease=settings.lease, wait=settings.wait
        )
        self._flags = flags
        self._clock = clock
        self._max_body = settings.max_body_bytes
        self._max_request_body = settings.max_request_body_bytes
        # A failing caller function must never put two callers under one entry: no caller,
        # the request bypasses the cache, rather than the client address (a proxy's, maybe).
        self._caller = CallerResolver(
            settings.caller or CREDENTIALS,
            ClientAddress(tuple(trusted_proxies), proxy_header),
            hook=CALLER_HOOK,
            on_error="none",
        )
        # The default caller's headers are in the key itself (see _prepare), unresolved.
        self._by_credentials = self._caller.spec is CREDENTIALS
        self.store.caller = self._caller  # @cached(per_caller=True) tells callers apart alike
        # Marked endpoints are read when the app is first seen: routes are declared after the
        # middleware is added (settings' routes were checked by the settings model).
        self._configured = [
            (pattern, route, route.cached_methods) for pattern, route in settings.routes.items()
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
        pattern = self._paths.match(route_path(scope))
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
        else:
            content = has_content(scope)
            if content is None:  # chunked, or HTTP/2: only the body itself tells
                received, content = await read_content(receive)
                receive = _replaying(received, receive)
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
                await self.app(scope, receive, _labelled(send, _BYPASS))
                return
        if raw is not None:
            entry = _readable(raw)
            if entry is not None and not entry.is_pass:  # a pass in the key: an older version's
                age = self._clock() - entry.stored_at
                if age < entry.ttl:
                    if from_backend and local is not None:
                        store.remember(key, raw, entry.ttl - age)
                    store.record(NAME, names.CACHE_HIT, key)
                    scope["route"] = route.label
                    await _send_entry(send, entry, _HIT, age)
                    return
                if age < entry.ttl + entry.stale:
                    store.record(NAME, names.CACHE_STALE, key)
                    scope["route"] = route.label
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

    async def _miss(
        self, route: _Route, key: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """One caller in the fleet runs the app; the others take what it stores."""
        refusals_key = _refusals_key(key)
        try:
            last_refusal = await self.store.get(refusals_key)
        except BackendError:
            last_refusal = None
        refusals = 0

        async def lookup() -> Entry | _Outcome | None:
            nonlocal last_refusal, refusals
            try:
                raw, refusal = await self.store.get_many([key, refusals_key])
            except BackendError:
                return None
            entry = None if raw is None else _readable(raw)
            if (
                entry is not None
                and not entry.is_pass
                and self._clock() - entry.stored_at < entry.ttl + entry.stale
            ):
                return entry
            if refusal is not None and refusal != last_refusal:
                # A leader we waited for could not store its response, by its nature.
                last_refusal = refusal
                refusals += 1
                if refusals >= REFUSALS_BEFORE_PASSING:
                    return _PASS
            return None

        async def compute(turn: Turn | None) -> Entry | _Outcome:
            # Leading now; a caller that led before us may have stored it since our read.
            found = await lookup()
            if found is not None:
                return found
            await self._origin(route, key, scope, receive, send, turn)
            return _SERVED

        result = await self._flight.run_turn(key, lookup, compute)
        if result is _SERVED:
            return
        if isinstance(result, _Outcome):  # _PASS: the origin, side by side with the others
            await self._origin(route, key, scope, receive, send, None)
            return
        age = self._clock() - result.stored_at
        fresh = age < result.ttl
        self.store.record(NAME, names.CACHE_HIT if fresh else names.CACHE_STALE, key)
        scope["route"] = route.label
        await _send_entry(send, result, _HIT if fresh else _STALE, age)

    async def _origin(
        self,
        route: _Route,
        key: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        turn: Turn | None,
    ) -> None:
        """Run the app for this caller, streaming as it goes, and store what may be stored.
        A leader's ``turn`` ends the moment its response is stored or known not to be."""

        async def refused(passes: bool) -> None:
            if turn is None:
                return
            if passes:  # its own doing: noted, so that the others stop queueing after two
                await self._note_refusal(route, key)
            await turn.end()

        capture = Capture(
            send,
            statuses=route.statuses,
            accepted_vary=route.accepted_vary,
            limit=self._max_body,
            on_refused=refused,
        )
        async with capture:
            try:
                generation = await self._generation(route)
                with computing() as computation:
                    await self.app(scope, receive, capture)
                if self._keeps(route, capture, computation, generation):
                    await self._store(route, key, capture, generation)
            finally:
                # A response refused mid-stream (too large) has said MISS already: counted as
                # what it turned out to be.
                result = names.CACHE_MISS if capture.refused is None else names.CACHE_BYPASS
                self.store.record(NAME, result, key)
                if turn is not None:
                    await turn.end()  # before the rest reaches a client that may read slowly

    async def _generation(self, route: _Route) -> int | None:
        """For a tagged route, the invalidation clock before the app runs: the response is
        refused if one of its tags is invalidated meanwhile. None for an untagged route, or
        when the clock cannot be read (then nothing is stored under the tags)."""
        if not route.tags:
            return None
        with contextlib.suppress(BackendError):  # counted and traced by the backend
            return await self.store.generation()
        return None

    @staticmethod
    def _keeps(
        route: _Route, capture: Capture, computation: Computation, generation: int | None
    ) -> bool:
        """Whether to store the response: storable, not a fallback's answer (an outage's
        canned reply would outlive the outage), and for a tagged route read against the
        invalidation clock."""
        return (
            capture.storable
            and not computation.fallback
            and (generation is not None or not route.tags)
        )

    async def _store(
        self, route: _Route, key: str, capture: Capture, generation: int | None
    ) -> None:
        value = encode(
            capture.status,
            capture.headers,
            b"".join(capture.chunks),
            self._clock(),
            route.ttl,
            route.stale,
        )
        with contextlib.suppress(BackendError):  # counted and traced by the backend
            await self.store.set(key, value, route.ttl + route.stale, route.tags, generation)

    async def _note_refusal(self, route: _Route, key: str) -> None:
        """Note, beside the key (never in its place), that a response could not be stored."""
        ttl = min(route.ttl, PASS_TTL)
        with contextlib.suppress(BackendError):
            await self.store.set(_refusals_key(key), encode_pass(self._clock(), ttl), ttl)

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

        async def compute() -> _Outcome:
            # Another process may have refreshed it while we waited for the lease; read the
            # backend itself, not a local copy that may be the stale entry.
            found = (await self.store.backend.cache_get_many([key]))[0]
            entry = None if found is None else _readable(found)
            if entry is None or self._clock() - entry.stored_at >= entry.ttl:
                capture = Capture(
                    None,
                    statuses=route.statuses,
                    accepted_vary=route.accepted_vary,
                    limit=self._max_body,
                )
                generation = await self._generation(route)
                with computing() as computation:
                    async with asyncio.timeout(self.settings.wait):
                        await self.app(scope, _one_request(body or b""), capture)
                # Else the stale entry serves on, until it expires.
                if self._keeps(route, capture, computation, generation):
                    await self._store(route, key, capture, generation)
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
        by_credentials = self._by_credentials
        table: dict[str, dict[str, _Route]] = {}
        for pattern, settings, methods in self._configured:
            route = _prepare(pattern, settings, methods, by_credentials)
            table[pattern] = dict.fromkeys(methods, route)
        configured = set(table)
        for template, endpoint, route_methods in route_endpoints(
            getattr(application, "routes", ())
        ):
            marker = getattr(endpoint, MARKER, None)
            if not isinstance(marker, CacheRouteSettings) or template in configured:
                continue
            methods = marker.cached_methods
            if route_methods is not None:
                methods &= frozenset(route_methods)
            route = _prepare(template, marker, methods, by_credentials)
            for method in methods:
                table.setdefault(template, {}).setdefault(method, route)
        self._routes = table
        self._paths = PathMatcher(table)
        self._resolved = True


def _refusals_key(key: str) -> str:
    """Where the last refusal of ``key``'s responses is noted."""
    return f"pass:{key}"


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
