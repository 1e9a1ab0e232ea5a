"""The rate-limit middleware: decide before the app runs, answer 429 early, add the fields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import metrics, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolkit._configured import configured
from toolkit._default import DEFAULT, Default
from toolkit._deprecated import renamed_argument
from toolkit._paths import route_path
from toolkit._version import __version__
from toolkit.backends import (
    Backend,
    LimitsSupport,
    MemoryBackend,
    RateLimitStorage,
    backend_from_url,
)
from toolkit.errors import BackendError
from toolkit.flags import OFF, RATELIMIT, SHADOW, FlagSource, current_flags
from toolkit.identity import (
    CallerFunction,
    CallerResolver,
    ClientAddress,
    IPNetwork,
    ProxyHeader,
    digest,
)
from toolkit.ratelimit._headers import OWN_HEADERS, PolicyHeaders, send_rejection, send_unavailable
from toolkit.ratelimit.algorithms import Decision, create_algorithm
from toolkit.ratelimit.policies import DEFAULT_POLICY, Policy, PolicyTable, RoutePolicy
from toolkit.settings import Algorithm, FailureMode, HeaderStyle, RateLimitSettings
from toolkit.telemetry import names
from toolkit.telemetry.counts import shared_counts

# Fields we set are replaced, never doubled, if the app set them too. Retry-After is the app's.
_REPLACED = OWN_HEADERS - {b"retry-after"}


class RateLimitMiddleware:
    """Limits requests per caller before any cache or agent work; pure ASGI.

    Each request finds its policy (exempt paths, per-route policies, the default), charges it
    for the caller's key and either passes to the app, with ``RateLimit-Policy`` and
    ``RateLimit`` fields added to the response exactly once, or is answered ``429`` with
    ``Retry-After`` and a problem-details body. Response bodies, streams included, pass
    through untouched. When the backend fails or is slow past its timeout, a ``failure="open"``
    policy lets the request through and a ``"closed"`` one answers ``503``; no exception
    reaches the app. Each decision is counted in ``toolkit.rate_limit.requests`` and added to
    the current span as an event.

    Use it alone, ``app.add_middleware(RateLimitMiddleware, limit="60/minute")``, or through
    :func:`toolkit.install`. Its options are the fields of
    :class:`~toolkit.settings.RateLimitSettings`; one left at ``DEFAULT`` takes its value from
    ``settings`` (the built-in defaults when None).

    Args:
        limit: the default policy for every non-exempt route, e.g. ``"60/minute;1000/day"``;
            None for none (only ``routes`` are limited).
        caller: whose budget a request spends: ``"client"`` (the setting's default),
            ``"api_key"``, ``"header:<Name>"``, or a function of the ASGI scope returning the
            caller; see :mod:`toolkit.identity`. ``key=`` is its old name, deprecated.
        backend: a backend URL (``"memory://"``, ``"redis://..."``), connected and closed
            with the app's lifespan, or a backend offering what ``algorithm`` needs
            (:class:`~toolkit.backends.RateLimitStorage` for GCRA,
            :class:`~toolkit.backends.LimitsSupport` for the others; a :class:`Backend`
            offers both); an in-process memory backend of its own when None. ``storage=`` is
            its old name, deprecated.
        routes: route template or path pattern -> limit string or policy settings.
        route_policies: ready-made :class:`RoutePolicy` objects, checked after ``routes``.
        settings: a whole settings section (the built-in defaults when None); options given
            override its fields.
        flags: asked for ``ratelimit`` on every request (``off``: the bare app; ``shadow``:
            every policy in shadow mode); the current store when None.
        meter_provider: where the decision counter lives; the global provider when None.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: str | Default | None = DEFAULT,
        caller: str | CallerFunction | Default = DEFAULT,
        backend: str | RateLimitStorage | LimitsSupport | None = None,
        algorithm: Algorithm | Default = DEFAULT,
        routes: Mapping[str, Any] | Default = DEFAULT,
        exempt: Sequence[str] | Default = DEFAULT,
        failure: FailureMode | Default = DEFAULT,
        shadow: bool | Default = DEFAULT,
        headers: HeaderStyle | Default = DEFAULT,
        trusted_proxies: Sequence[IPNetwork | str] | Default = DEFAULT,
        proxy_header: ProxyHeader | Default = DEFAULT,
        route_policies: Sequence[RoutePolicy] = (),
        settings: RateLimitSettings | None = None,
        flags: FlagSource | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        key: str | CallerFunction | None = None,
        storage: str | RateLimitStorage | LimitsSupport | None = None,
    ) -> None:
        self.app = app
        where = "RateLimitMiddleware"
        caller = renamed_argument(where, "key", key, "caller", caller)
        backend = renamed_argument(where, "storage", storage, "backend", backend)
        settings = configured(
            where,
            RateLimitSettings,
            settings,
            {
                "limit": limit,
                "caller": caller,
                "algorithm": algorithm,
                "routes": routes,
                "exempt": exempt,
                "failure": failure,
                "shadow": shadow,
                "headers": headers,
                "trusted_proxies": trusted_proxies,
                "proxy_header": proxy_header,
            },
        )
        self.settings = settings

        self._owned: Backend | None = None  # connected and closed by this middleware
        if backend is None:
            backend = self._owned = MemoryBackend(meter_provider=meter_provider)
        elif isinstance(backend, str):
            backend = self._owned = backend_from_url(backend, meter_provider=meter_provider)

        client = ClientAddress.from_settings(settings)
        self._default_caller = CallerResolver(settings.caller, client)
        self._table = PolicyTable(
            _default_policy(settings),
            [*_route_policies(settings, client), *route_policies],
            settings.exempt,
        )
        self._algorithm = create_algorithm(settings.algorithm, backend)
        # An in-process decision is made without a coroutine (the memory backend's GCRA).
        self._acquire_now = getattr(self._algorithm, "acquire_now", None)
        self._fields = {p: PolicyHeaders(p, settings.headers) for p in self._table.policies}
        self._unlimited = not self._table.policies  # no limit anywhere: nothing to match
        self._flags = flags
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self._decisions = shared_counts(meter, names.RATE_LIMIT_REQUESTS_METRIC)
        self._attributes = {
            (policy, result): {
                names.RATE_LIMIT_POLICY: policy.name,
                names.RATE_LIMIT_RESULT: result,
            }
            for policy in self._table.policies
            for result in names.RATE_LIMIT_RESULTS
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self._owned is not None:
                receive = self._lifespan_receive(receive, self._owned)
            await self.app(scope, receive, send)
            return
        mode = (self._flags or current_flags()).variant(RATELIMIT)
        if mode == OFF or self._unlimited:
            await self.app(scope, receive, send)
            return
        policy = self._table.match(scope["method"], route_path(scope))
        if policy is None:
            await self.app(scope, receive, send)
            return

        resolver = policy.caller or self._default_caller
        # Awaiting only when the caller function is async saves a coroutine per request.
        identity = await resolver(scope) if resolver.is_async else resolver.resolve(scope)
        key = digest(policy.name, identity)
        try:
            if self._acquire_now is not None:
                decision = self._acquire_now(key, policy)
            else:
                decision = await self._algorithm.acquire(key, policy)
        except BackendError:
            self._record(policy, names.RATE_LIMIT_ERROR, key, None)
            if policy.failure == "closed":
                await send_unavailable(send, policy)
            else:
                await self.app(scope, receive, send)
            return

        shadow = policy.shadow or mode == SHADOW
        if decision.allowed:
            result = names.RATE_LIMIT_ALLOWED
        elif shadow:
            result = names.RATE_LIMIT_SHADOW_REJECTED
        else:
            result = names.RATE_LIMIT_REJECTED
        self._record(policy, result, key, decision)
        if shadow:  # a dark launch changes no response
            await self.app(scope, receive, send)
            return
        fields = self._fields[policy].fields(decision)
        if result == names.RATE_LIMIT_REJECTED:
            await send_rejection(send, policy, decision, fields)
        elif fields:

            async def send_with_fields(message: Message) -> None:
                # Added to the response start, once; the body passes as is. ASGI header names
                # are lower-case bytes (the spec requires it). The message is the app's own,
                # built for this response: edited in place, as Starlette does.
                if message["type"] == "http.response.start":
                    headers = [h for h in message.get("headers", ()) if h[0] not in _REPLACED]
                    headers += fields
                    message["headers"] = headers
                await send(message)

            await self.app(scope, receive, send_with_fields)
        else:
            await self.app(scope, receive, send)

    def _record(self, policy: Policy, result: str, key: str, decision: Decision | None) -> None:
        series = (policy, result)
        self._decisions.add(series, self._attributes[series])
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.set_attribute(names.RATE_LIMIT_KEY, key)
        event: dict[str, str | int | float] = {
            names.RATE_LIMIT_POLICY: policy.name,
            names.RATE_LIMIT_RESULT: result,
        }
        if decision is not None:
            event[names.RATE_LIMIT_LIMIT] = str(policy.limits[decision.binding])
            event[names.RATE_LIMIT_REMAINING] = decision.remaining
            event[names.RATE_LIMIT_RESET] = (
                decision.reset_after if decision.allowed else decision.retry_after
            )
        span.add_event(names.RATE_LIMIT_DECISION_EVENT, event)

    def _lifespan_receive(self, receive: Receive, backend: Backend) -> Receive:
        """Connect a backend this middleware created at startup and close it at shutdown."""

        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await backend.connect()
            elif message["type"] == "lifespan.shutdown":
                await backend.close()
            return message

        return lifespan_receive


def _default_policy(settings: RateLimitSettings) -> Policy | None:
    if settings.limit is None:
        return None
    return Policy.parse(
        DEFAULT_POLICY, settings.limit, failure=settings.failure, shadow=settings.shadow
    )


def _route_policies(settings: RateLimitSettings, client: ClientAddress) -> list[RoutePolicy]:
    return [
        RoutePolicy(
            pattern,
            Policy.parse(
                pattern,
                route.limit,
                cost=route.cost,
                caller=CallerResolver(route.caller, client) if route.caller else None,
                failure=route.failure or settings.failure,
                shadow=settings.shadow if route.shadow is None else route.shadow,
                methods=frozenset(m.upper() for m in route.methods) if route.methods else None,
            ),
        )
        for pattern, route in settings.routes.items()
    ]
