"""slowapi compatibility: keep the ``Limiter`` and ``@limiter.limit`` decorators, change one import.

    # before
    from slowapi.middleware import SlowAPIMiddleware
    # after
    from toolkit.ratelimit.slowapi import SlowAPIMiddleware

    app.add_middleware(SlowAPIMiddleware)   # unchanged; reads app.state.limiter as before

The limits declared with slowapi are then enforced by the toolkit before routing, on its
async backend (no blocking Redis client, the toolkit's headers, metrics and failure policy),
and slowapi's own checks are switched off. With :func:`toolkit.install` the limiter at
``app.state.limiter`` is enforced in the rate-limit position of the toolkit's stack, on its
backend and metrics, whether or not the app adds a slowapi middleware and in whichever order.

Each route's declarations become one policy per route (one budget per HTTP method with
``per_method``). What cannot be one budget per request, or depends on the request in ways
only known after routing (``exempt_when``, callable limits, costs and scopes), is refused when
the app starts, with a message naming the route, rather than silently not enforced.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import metrics
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolkit._paths import is_literal, route_endpoints
from toolkit.backends import Backend, backend_from_url
from toolkit.errors import ConfigurationError
from toolkit.flags import FlagSource
from toolkit.identity import ClientAddress, KeyFunction, KeyResolver
from toolkit.ratelimit.middleware import RateLimitMiddleware
from toolkit.ratelimit.policies import Policy, RoutePolicy
from toolkit.settings import HeaderStyle, RateLimitSettings, validate_arguments

logger = logging.getLogger("toolkit.ratelimit")

# The methods a route that accepts any method is limited for, when a limit names methods.
_ANY_METHOD = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
_WITH_LEGACY: dict[HeaderStyle, HeaderStyle] = {
    "ietf": "both",
    "both": "both",
    "legacy": "legacy",
    "none": "legacy",
}


class SlowAPIMiddleware:
    """Enforces the slowapi ``Limiter`` at ``app.state.limiter`` with the toolkit.

    Add it where slowapi's middleware was. On an app with :func:`toolkit.install` it passes
    every request on: ``install()`` enforces the limiter itself, with its settings. Otherwise
    it enforces the limiter here, on the limiter's ``storage_uri``.

    Args:
        storage: overrides the limiter's ``storage_uri``; a URL or a :class:`Backend`.
        algorithm: overrides the limiter's ``strategy``; ``"gcra"`` is allowed here.
        headers: ``ietf``, ``legacy``, ``both`` or ``none``; ``both`` with ``headers_enabled``
            and ``ietf`` without, when None.
        failure, shadow, trusted_proxies, exempt: as in
            :class:`~toolkit.settings.RateLimitSettings` (``exempt`` adds to the routes marked
            ``@limiter.exempt``).
        flags: asked for ``ratelimit`` on every request; the current store when None.
        meter_provider: where the decisions are counted; the global provider when None.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        storage: str | Backend | None = None,
        algorithm: str | None = None,
        headers: str | None = None,
        failure: str | None = None,
        shadow: bool | None = None,
        trusted_proxies: Sequence[str] | None = None,
        exempt: Sequence[str] | None = None,
        flags: FlagSource | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.app = app
        self._storage = storage
        self._given = {
            name: value
            for name, value in (
                ("algorithm", algorithm),
                ("headers", headers),
                ("failure", failure),
                ("shadow", shadow),
                ("trusted_proxies", trusted_proxies),
                ("exempt", exempt),
            )
            if value is not None
        }
        self._flags = flags
        self._meter_provider = meter_provider
        self._next: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._next is None:
            try:
                self._next = self._resolve(scope["app"])
            except ConfigurationError as exc:
                if scope["type"] != "lifespan":
                    raise
                await _fail_startup(receive, send, exc)
                return
        await self._next(scope, receive, send)

    def _resolve(self, application: Any) -> ASGIApp:
        if getattr(application.state, "toolkit", None) is not None:
            given = sorted([*self._given, *(["storage"] if self._storage else [])])
            if given:
                logger.warning(
                    "SlowAPIMiddleware(%s): not used, install() enforces app.state.limiter "
                    "with its settings (TOOLKIT_RATELIMIT__*, TOOLKIT_BACKEND__URL)",
                    ", ".join(given),
                )
            return self.app
        limiter: Any = getattr(application.state, "limiter", None)
        if not _is_limiter(limiter):
            raise ConfigurationError(
                f"SlowAPIMiddleware needs a slowapi Limiter at app.state.limiter, found "
                f"{limiter!r}; set app.state.limiter = Limiter(key_func=get_remote_address)"
            )
        settings = validate_arguments(
            RateLimitSettings,
            {
                "algorithm": _strategy(limiter),
                "headers": "both" if limiter._headers_enabled else "ietf",
                **self._given,
                "exempt": self._given.get("exempt", []),
            },
        )
        storage = self._storage or _storage_uri(limiter)
        return _enforced(
            self.app,
            application=application,
            limiter=limiter,
            settings=settings,
            storage=storage,
            flags=self._flags,
            meter_provider=self._meter_provider,
            with_middleware=True,
        )


def installed_slowapi_limits(
    app: ASGIApp,
    *,
    application: Any,
    settings: RateLimitSettings,
    storage: Backend,
    flags: FlagSource,
    meter_provider: metrics.MeterProvider | None,
) -> ASGIApp:
    """install()'s rate-limit position for an app's slowapi limiter: ``app`` itself when
    ``application.state.limiter`` is not a slowapi ``Limiter``, else its limits on the
    toolkit's backend, metrics, flags and settings (the limiter's strategy and headers)."""
    limiter: Any = getattr(application.state, "limiter", None)
    if not _is_limiter(limiter):
        return app
    headers = _WITH_LEGACY[settings.headers] if limiter._headers_enabled else settings.headers
    return _enforced(
        app,
        application=application,
        limiter=limiter,
        settings=settings.model_copy(update={"algorithm": _strategy(limiter), "headers": headers}),
        storage=storage,
        flags=flags,
        meter_provider=meter_provider,
        with_middleware=any(
            middleware.cls in _slowapi_middlewares() for middleware in application.user_middleware
        ),
    )


def _enforced(
    app: ASGIApp,
    *,
    application: Any,
    limiter: Any,
    settings: RateLimitSettings,
    storage: str | Backend,
    flags: FlagSource | None,
    meter_provider: metrics.MeterProvider | None,
    with_middleware: bool,
) -> ASGIApp:
    """``limiter`` enforced in front of ``app``; ``app`` itself when the limiter is off."""
    # auto_check=False means slowapi never checks anything: the same as disabled.
    if not limiter.enabled or not limiter._auto_check:
        return app
    return _SlowAPILimits(
        app,
        application,
        limiter,
        settings,
        storage,
        flags=flags,
        meter_provider=meter_provider,
        with_middleware=with_middleware,
    )


class _SlowAPILimits:
    """A :class:`RateLimitMiddleware` over the limiter's declarations, read when the app
    starts and read again whenever routes or declarations are added (a route added after
    the first request is limited, exempt or defaulted as it says)."""

    def __init__(
        self,
        app: ASGIApp,
        application: Any,
        limiter: Any,
        settings: RateLimitSettings,
        storage: str | Backend,
        *,
        flags: FlagSource | None,
        meter_provider: metrics.MeterProvider | None,
        with_middleware: bool,
    ) -> None:
        self.app = app
        self._application = application
        self._limiter = limiter
        self._settings = settings
        self._owns_backend = not isinstance(storage, Backend)
        self._backend = _backend(storage, meter_provider)
        self._flags = flags
        self._meter_provider = meter_provider
        self._with_middleware = with_middleware
        self._client = ClientAddress(settings.trusted_proxies)
        self._limits: RateLimitMiddleware | None = None
        self._version: tuple[int, ...] = ()
        # From now on slowapi's decorators and middleware check nothing: the toolkit does.
        limiter.enabled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self._limits
        if limits is None or self._version != self._current_version():
            limits = self._read()
        await limits(scope, receive, send)

    def _current_version(self) -> tuple[int, ...]:
        """Changes whenever a route or a slowapi declaration is added; a few len() calls."""
        limiter = self._limiter
        return (
            len(self._application.router.routes),
            len(limiter._route_limits),
            len(limiter._exempt_routes),
            len(limiter._dynamic_route_limits),
        )

    def _read(self) -> RateLimitMiddleware:
        """The limits as declared now; raises ConfigurationError on the first read only."""
        version = self._current_version()
        try:
            policies, exempt = _declared_policies(
                self._limiter,
                self._application.routes,
                self._client,
                settings=self._settings,
                with_defaults=self._with_middleware,
            )
            limits = RateLimitMiddleware(
                self.app,
                storage=self._backend,
                route_policies=policies,
                settings=self._settings.model_copy(
                    update={
                        "limit": None,
                        "routes": {},
                        "exempt": [*self._settings.exempt, *exempt],
                    }
                ),
                flags=self._flags,
                meter_provider=self._meter_provider,
            )
        except ConfigurationError:
            if self._limits is None:
                raise
            # Already serving: keep the limits read before rather than fail every request.
            logger.exception("slowapi declarations added at run time are not enforced")
            limits = self._limits
        self._limits, self._version = limits, version
        return limits

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the declarations before serving: a refusal fails the startup, so a server
        exits instead of answering 500 to every request. Connect and close the backend when
        it is this middleware's own."""
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                self._read()
            except ConfigurationError as exc:
                await _fail_startup(None, send, exc)
                return
            if self._owns_backend:
                await self._backend.connect()
        first: Message | None = message

        async def lifespan_receive() -> Message:
            nonlocal first
            if first is not None:
                message, first = first, None
            else:
                message = await receive()
            if message["type"] == "lifespan.shutdown" and self._owns_backend:
                await self._backend.close()
            return message

        await self.app(scope, lifespan_receive, send)


def _declared_policies(
    limiter: Any,
    routes: Iterable[Any],
    client: ClientAddress,
    *,
    settings: RateLimitSettings,
    with_defaults: bool,
) -> tuple[list[RoutePolicy], list[str]]:
    """The policies of every route of the app, and the literal paths no policy covers.

    As slowapi does: a decorated route has its own limits (plus the defaults when every one
    says ``override_defaults=False``); an undecorated route has ``application_limits`` or
    ``default_limits`` only when a slowapi middleware is on the app (``with_defaults``); a
    route marked ``@limiter.exempt`` has none. The toolkit's own routes have none.
    """
    keys = _Keys(limiter, client)
    defaults = _limits(limiter._default_limits, "default_limits")
    application = _limits(limiter._application_limits, "application_limits")
    if defaults and application and with_defaults:
        raise ConfigurationError(
            "slowapi application_limits together with default_limits are not supported: a "
            "request would spend two budgets (the application's and its route's); keep one of "
            "them, and express the other as the toolkit's limit (TOOLKIT_RATELIMIT__LIMIT)"
        )
    policies: list[RoutePolicy] = []
    limited: set[str] = set()
    unlimited: list[str] = []
    for template, endpoint, methods in route_endpoints(routes):
        # slowapi's name for an endpoint; a callable object without one was never decorated.
        module = getattr(endpoint, "__module__", None) or ""
        name = f"{module}.{getattr(endpoint, '__name__', '')}"
        if name in limiter._dynamic_route_limits:
            raise ConfigurationError(
                f"route {template}: slowapi limits given as a callable are not supported (the "
                "toolkit reads limits once, not per request); give @limiter.limit a limit "
                "string such as '5/minute'"
            )
        declared = limiter._route_limits.get(name)
        items: list[Any]
        if name in limiter._exempt_routes or module.startswith("toolkit."):
            items = []
        elif declared is not None:
            if not declared:
                raise ConfigurationError(
                    f"route {template}: its slowapi limit could not be parsed (slowapi logged "
                    "'Failed to configure throttling'); write a limit such as '5/minute' or "
                    "'5/minute;100/day'"
                )
            overrides = any(item.override_defaults for item in declared)
            items = declared if overrides else [*declared, *defaults]
        elif with_defaults:
            items = application or defaults
        else:
            items = []
        route_policies = _route_policies(template, methods, items, keys, settings)
        if route_policies:
            policies += route_policies
            limited.add(template)
        elif is_literal(template):
            unlimited.append(template)
    # A path without a policy falls through to the route patterns; its own route must not
    # spend the budget of a pattern it also matches (/items/special and /items/{id}).
    return policies, [path for path in unlimited if path not in limited]


def _limits(groups: Sequence[Any], setting: str) -> list[Any]:
    """The limits of slowapi LimitGroups given at the limiter level."""
    for group in groups:
        if callable(getattr(group, "_LimitGroup__limit_provider", None)):
            raise ConfigurationError(
                f"slowapi {setting} given as a callable are not supported; use a limit string "
                "such as '60/minute'"
            )
    return [item for group in groups for item in group]


async def _fail_startup(receive: Receive | None, send: Send, exc: ConfigurationError) -> None:
    """Answer the lifespan startup with the refusal: the server logs it and exits, rather
    than serving a process that answers 500 to every request."""
    if receive is not None:
        await receive()  # lifespan.startup
    await send({"type": "lifespan.startup.failed", "message": str(exc)})


def _backend(storage: str | Backend, meter_provider: metrics.MeterProvider | None) -> Backend:
    if isinstance(storage, Backend):
        return storage
    try:
        return backend_from_url(storage, meter_provider=meter_provider)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"slowapi storage_uri {storage!r} is not a storage of the toolkit; use memory:// "
            "or redis://host:6379/0 (on the Limiter, or SlowAPIMiddleware(storage=...))"
        ) from exc


def _route_policies(
    template: str,
    route_methods: set[str] | None,
    items: list[Any],
    keys: _Keys,
    settings: RateLimitSettings,
) -> list[RoutePolicy]:
    """One policy per set of methods that spends the same budget on a route."""
    for item in items:
        _refuse_per_request_options(template, item)
        if item.error_message:
            logger.warning(
                "route %s: slowapi error_message is not used; 429s carry problem details instead",
                template,
            )
    if not items:
        return []
    if route_methods is None and not any(i.methods or i.per_method for i in items):
        methods: Iterable[str | None] = [None]
    else:
        methods = sorted(route_methods or _ANY_METHOD)
    groups: dict[tuple[Any, ...], list[str]] = {}
    for method in methods:
        applying = [i for i in items if i.methods is None or (method or "").lower() in i.methods]
        if not applying:
            continue
        budgets = {
            ((i.scope or template) + (f":{method}" if i.per_method else ""), i.key_func, i.cost)
            for i in applying
        }
        if len(budgets) > 1:
            raise ConfigurationError(_two_budgets(template, method, budgets))
        budget = budgets.pop()
        groups.setdefault((*budget, tuple(i.limit for i in applying)), []).append(method or "")
    return [
        RoutePolicy(
            template,
            Policy(
                name,
                limits,
                cost,
                keys.resolver(key_func, template),
                failure=settings.failure,
                shadow=settings.shadow,
                methods=frozenset(group) if group != [""] else None,
            ),
        )
        for (name, key_func, cost, limits), group in groups.items()
    ]


def _refuse_per_request_options(template: str, item: Any) -> None:
    if not callable(item.cost) and (not isinstance(item.cost, int) or item.cost < 1):
        raise ConfigurationError(
            f"route {template}: slowapi cost={item.cost!r} is not a whole number of units of "
            "at least 1; give an integer cost, such as cost=2"
        )
    if item.exempt_when is not None:
        raise ConfigurationError(
            f"route {template}: slowapi exempt_when is not supported (the toolkit decides "
            "before the route runs, from its path and method); remove exempt_when, or mark "
            "the whole route @limiter.exempt"
        )
    if callable(item.cost):
        raise ConfigurationError(
            f"route {template}: a slowapi cost computed per request is not supported; give "
            "an integer cost, such as cost=2"
        )
    if callable(getattr(item, "_Limit__scope", None)):
        raise ConfigurationError(
            f"route {template}: a slowapi shared_limit scope given as a callable is not "
            "supported; give it a string scope"
        )


def _two_budgets(template: str, method: str | None, budgets: set[tuple[Any, ...]]) -> str:
    names = {name for name, _, _ in budgets}
    functions = {key_func for _, key_func, _ in budgets}
    costs = {cost for _, _, cost in budgets}
    what = (
        "different key functions ("
        + ", ".join(sorted(getattr(f, "__name__", repr(f)) for f in functions))
        + ")"
        if len(functions) > 1
        else f"different costs ({', '.join(map(str, sorted(costs)))})"
        if len(costs) > 1
        else f"different scopes ({', '.join(sorted(names))})"
    )
    requests = f"{method} requests" if method else "requests"
    return (
        f"route {template}: slowapi limits with {what} on one route are not supported ({requests} "
        "would spend several budgets); give the route's limits one key function, one cost and "
        "one scope, or express the other budget as a toolkit route policy "
        "(TOOLKIT_RATELIMIT__ROUTES)"
    )


class _Keys:
    """The key resolvers of a route's slowapi key functions, called as slowapi calls them."""

    def __init__(self, limiter: Any, client: ClientAddress) -> None:
        self._prefix = limiter._key_prefix or ""
        self._client = client
        self._resolvers: dict[tuple[int, str], KeyResolver] = {}

    def resolver(self, function: Any, template: str) -> KeyResolver:
        found = self._resolvers.get((id(function), template))
        if found is None:
            found = KeyResolver(self._key_function(function, template), self._client)
            self._resolvers[id(function), template] = found
        return found

    def _key_function(self, function: Any, template: str) -> KeyFunction:
        call: KeyFunction
        util = sys.modules.get("slowapi.util")
        if util is not None and function is util.get_remote_address:
            # The peer address, as slowapi's function; read past trusted proxies when set.
            call = self._client
        elif _takes_request(function):
            call = _with_request(function, template)
        else:  # slowapi calls it with no argument: one budget for every caller
            call = lambda scope: function()  # noqa: E731
        if not self._prefix:
            return call
        prefix = self._prefix

        def prefixed(scope: Scope) -> str | None:
            value = call(scope)
            return f"{prefix}/{value}" if value else None

        return prefixed


def _with_request(function: Any, template: str) -> KeyFunction:
    """``function(request)``, the request's ``path_params`` filled from the route template:
    slowapi's decorators run after routing, where key functions can read them."""
    regex, _, _ = compile_path(template)
    if not regex.groupindex:
        return lambda scope: function(Request(scope))

    def with_path_params(scope: Scope) -> Any:
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root) :]
        match = regex.match(path)
        return function(Request({**scope, "path_params": match.groupdict() if match else {}}))

    return with_path_params


def _takes_request(function: Any) -> bool:
    """slowapi passes the request only to a parameter named ``request``."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin without a signature: give it the request
        return True
    if "request" in parameters:
        return True
    required = [
        p
        for p in parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        name = getattr(function, "__qualname__", repr(function))
        raise ConfigurationError(
            f"key_func {name}: slowapi passes the request only to a parameter named 'request' "
            f"and calls other key functions with no argument; rename its parameter "
            f"({required[0].name}) to request"
        )
    return False


def _strategy(limiter: Any) -> str:
    """The limiter's strategy name (given, from RATELIMIT_STRATEGY, or fixed-window)."""
    from limits.strategies import STRATEGIES

    for name, strategy in STRATEGIES.items():
        if type(limiter._limiter) is strategy:
            return name
    return "fixed-window"


def _storage_uri(limiter: Any) -> str:
    """The limiter's storage (given, or from RATELIMIT_STORAGE_URL, or in memory)."""
    uri: str = limiter._storage_uri or limiter.get_app_config("RATELIMIT_STORAGE_URL", "memory://")
    return uri


def _is_limiter(limiter: object) -> bool:
    """Whether ``limiter`` is a slowapi Limiter (slowapi is imported by the app, if at all)."""
    extension = sys.modules.get("slowapi.extension")
    return extension is not None and isinstance(limiter, extension.Limiter)


def _slowapi_middlewares() -> tuple[type[Any], ...]:
    """The middleware classes after which slowapi applies its default limits."""
    own = sys.modules.get("slowapi.middleware")
    if own is None:
        return (SlowAPIMiddleware,)
    return (SlowAPIMiddleware, own.SlowAPIMiddleware, own.SlowAPIASGIMiddleware)
