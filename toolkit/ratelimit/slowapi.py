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

import logging
import sys
from collections.abc import Sequence
from typing import Any

from opentelemetry import metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolkit._configured import chosen
from toolkit._default import DEFAULT, Default
from toolkit._deprecated import renamed_argument
from toolkit.backends import Backend, backend_from_url
from toolkit.errors import ConfigurationError
from toolkit.flags import FlagSource
from toolkit.identity import ClientAddress, IPNetwork, ProxyHeader
from toolkit.ratelimit._slowapi_policies import declared_policies
from toolkit.ratelimit.middleware import RateLimitMiddleware
from toolkit.settings import Algorithm, FailureMode, HeaderStyle, RateLimitSettings
from toolkit.settings._section import validate_arguments

__all__ = ["SlowAPIMiddleware"]

logger = logging.getLogger("toolkit.ratelimit")

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
        backend: overrides the limiter's ``storage_uri``; a URL or a :class:`Backend`.
            ``storage=`` is its old name, deprecated.
        algorithm: overrides the limiter's ``strategy``; ``"gcra"`` is allowed here.
        headers: ``ietf``, ``legacy``, ``both`` or ``none``; by default ``both`` with
            ``headers_enabled`` and ``ietf`` without.
        failure, shadow, trusted_proxies, proxy_header, exempt: as in
            :class:`~toolkit.settings.RateLimitSettings` (``exempt`` adds to the routes marked
            ``@limiter.exempt``).
        flags: asked for ``ratelimit`` on every request; ``current_flags()`` when None.
        meter_provider: where the decisions are counted; the global provider when None.

    Options left at ``DEFAULT`` are the limiter's (``strategy``, ``headers_enabled``), else
    those of :class:`~toolkit.settings.RateLimitSettings`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        backend: str | Backend | None = None,
        algorithm: Algorithm | Default = DEFAULT,
        headers: HeaderStyle | Default = DEFAULT,
        failure: FailureMode | Default = DEFAULT,
        shadow: bool | Default = DEFAULT,
        trusted_proxies: Sequence[IPNetwork | str] | Default = DEFAULT,
        proxy_header: ProxyHeader | Default = DEFAULT,
        exempt: Sequence[str] | Default = DEFAULT,
        flags: FlagSource | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        storage: str | Backend | None = None,
    ) -> None:
        self.app = app
        self._backend = renamed_argument(
            "SlowAPIMiddleware", "storage", storage, "backend", backend
        )
        self._given = chosen(
            "SlowAPIMiddleware",
            RateLimitSettings,
            {
                "algorithm": algorithm,
                "headers": headers,
                "failure": failure,
                "shadow": shadow,
                "trusted_proxies": trusted_proxies,
                "proxy_header": proxy_header,
                "exempt": exempt,
            },
        )
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
            given = sorted([*self._given, *(["backend"] if self._backend else [])])
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
        return _enforced(
            self.app,
            application=application,
            limiter=limiter,
            settings=settings,
            backend=self._backend or _storage_uri(limiter),
            flags=self._flags,
            meter_provider=self._meter_provider,
            with_middleware=True,
        )


def installed_slowapi_limits(
    app: ASGIApp,
    *,
    application: Any,
    settings: RateLimitSettings,
    backend: Backend,
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
        backend=backend,
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
    backend: str | Backend,
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
        backend,
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
        backend: str | Backend,
        *,
        flags: FlagSource | None,
        meter_provider: metrics.MeterProvider | None,
        with_middleware: bool,
    ) -> None:
        self.app = app
        self._application = application
        self._limiter = limiter
        self._settings = settings
        self._owns_backend = not isinstance(backend, Backend)
        self._backend = _backend(backend, meter_provider)
        self._flags = flags
        self._meter_provider = meter_provider
        self._with_middleware = with_middleware
        self._client = ClientAddress.from_settings(settings)
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
            policies, exempt = declared_policies(
                self._limiter,
                self._application.routes,
                self._client,
                settings=self._settings,
                with_defaults=self._with_middleware,
            )
            limits = RateLimitMiddleware(
                self.app,
                backend=self._backend,
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


async def _fail_startup(receive: Receive | None, send: Send, exc: ConfigurationError) -> None:
    """Answer the lifespan startup with the refusal: the server logs it and exits, rather
    than serving a process that answers 500 to every request."""
    if receive is not None:
        await receive()  # lifespan.startup
    await send({"type": "lifespan.startup.failed", "message": str(exc)})


def _backend(backend: str | Backend, meter_provider: metrics.MeterProvider | None) -> Backend:
    if isinstance(backend, Backend):
        return backend
    try:
        return backend_from_url(backend, meter_provider=meter_provider)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"slowapi storage_uri {backend!r} is not a storage of the toolkit; use memory:// "
            "or redis://host:6379/0 (on the Limiter, or SlowAPIMiddleware(backend=...))"
        ) from exc


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
