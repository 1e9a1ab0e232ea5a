"""slowapi compatibility: keep the ``Limiter`` and ``@limiter.limit`` decorators, change one import.

    # before
    from slowapi.middleware import SlowAPIMiddleware
    # after
    from toolkit.ratelimit.slowapi import SlowAPIMiddleware

    app.add_middleware(SlowAPIMiddleware)   # unchanged; reads app.state.limiter as before

The limits declared with slowapi are then enforced by the toolkit before routing, on its
async backend (no blocking Redis client, one policy per route, the toolkit's headers, metrics
and failure policy), and slowapi's own checks are switched off. Supported: static limit
strings on ``limit`` and ``shared_limit``, ``default_limits``, ``key_func`` (per limiter and per
route), ``methods``, ``per_method``, integer ``cost``, ``@limiter.exempt``, ``strategy``,
``storage_uri`` and ``headers_enabled`` (adds the ``X-RateLimit-*`` fields). Anything else
(dynamic limit callables, ``exempt_when``, callable costs, ``application_limits``) is refused at
startup with a message naming the route, rather than silently not enforced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from toolkit._paths import route_endpoints
from toolkit.backends import Backend
from toolkit.errors import ConfigurationError
from toolkit.identity import ClientAddress, KeyResolver
from toolkit.ratelimit.middleware import RateLimitMiddleware
from toolkit.ratelimit.policies import DEFAULT_POLICY, Policy, RoutePolicy

logger = logging.getLogger("toolkit.ratelimit")


class SlowAPIMiddleware:
    """Enforces the slowapi ``Limiter`` at ``app.state.limiter`` with the toolkit.

    The policies are read from the limiter once, when the app starts (routes are all declared
    by then), so the app object is only needed from the first ASGI call.

    Args:
        storage: overrides the limiter's ``storage_uri``; a URL or a :class:`Backend`.
        options: any other :class:`RateLimitMiddleware` argument (``algorithm``, ``failure``,
            ``trusted_proxies``, ``flags``, ``meter_provider``...).
    """

    def __init__(self, app: ASGIApp, *, storage: str | Backend | None = None, **options: Any):
        self.app = app
        self._storage = storage
        self._options = options
        self._limiter: RateLimitMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._limiter is None:
            self._limiter = self._build(scope["app"])
        await self._limiter(scope, receive, send)

    def _build(self, application: Any) -> RateLimitMiddleware:
        limiter = application.state.limiter
        options = dict(self._options)
        options.setdefault("algorithm", getattr(limiter, "_strategy", None) or "fixed-window")
        if getattr(limiter, "_headers_enabled", False):
            options.setdefault("headers", "both")
        if not limiter.enabled:
            options["flags"] = _Disabled()
        client = ClientAddress(options.get("trusted_proxies") or ())
        policies, exempt = _policies(limiter, application.routes, client)
        default = _default_policy(limiter, client)
        # slowapi no longer checks anything: the toolkit does, before routing.
        limiter.enabled = False
        return RateLimitMiddleware(
            self.app,
            storage=self._storage or getattr(limiter, "_storage_uri", None) or "memory://",
            route_policies=[*policies, *([RoutePolicy("*", default)] if default else [])],
            exempt=exempt,
            **options,
        )


class _Disabled:
    """Flags for a limiter created with ``enabled=False``: it stays off."""

    def is_enabled(self, name: str, *, subject: str | None = None) -> bool:
        del name, subject
        return False


def _key(function: Callable[[Request], str], client: ClientAddress) -> KeyResolver:
    """slowapi key functions take a Request; the toolkit's take the ASGI scope."""
    return KeyResolver(lambda scope: function(Request(scope)), client)


def _policies(
    limiter: Any, routes: Iterable[Any], client: ClientAddress
) -> tuple[list[RoutePolicy], list[str]]:
    policies: list[RoutePolicy] = []
    exempt: list[str] = []
    if getattr(limiter, "_application_limits", None):
        raise ConfigurationError(
            "slowapi application_limits are not supported by the toolkit; express them as the "
            "default limit or per-route limits"
        )
    for template, endpoint, methods in route_endpoints(routes):
        name = f"{endpoint.__module__}.{endpoint.__name__}"
        if name in limiter._exempt_routes:
            exempt.append(template)
        if name in limiter._dynamic_route_limits:
            raise ConfigurationError(
                f"route {template}: slowapi limits given as a callable are not supported; "
                "use a limit string"
            )
        declared = limiter._route_limits.get(name)
        if declared:
            policies += _route_policies(template, methods, declared, client)
    return policies, exempt


def _route_policies(
    template: str, route_methods: set[str] | None, declared: list[Any], client: ClientAddress
) -> list[RoutePolicy]:
    first = declared[0]
    for limit in declared:
        problem = (
            "exempt_when"
            if limit.exempt_when is not None
            else "a callable cost"
            if callable(limit.cost)
            else "different key functions or methods"
            if (
                limit.key_func is not first.key_func
                or limit.methods != first.methods
                or limit.per_method != first.per_method
                or limit.cost != first.cost
            )
            else None
        )
        if problem:
            raise ConfigurationError(
                f"route {template}: slowapi limits with {problem} are not supported; give the "
                "route one set of limits with one key function"
            )
        if limit.error_message:
            logger.warning(
                "route %s: slowapi error_message is not used; 429s carry problem details instead",
                template,
            )
    name = first.scope or template
    items = tuple(limit.limit for limit in declared)
    methods = frozenset(m.upper() for m in first.methods) if first.methods else None
    key = _key(first.key_func, client)
    if not first.per_method:
        return [RoutePolicy(template, Policy(name, items, first.cost, key, methods=methods))]
    # per_method: one budget per HTTP method.
    return [
        RoutePolicy(template, Policy(f"{name}:{m}", items, first.cost, key, methods=frozenset([m])))
        for m in sorted(methods or route_methods or ())
    ]


def _default_policy(limiter: Any, client: ClientAddress) -> Policy | None:
    items = []
    for group in limiter._default_limits:
        if callable(getattr(group, "_LimitGroup__limit_provider", None)):
            raise ConfigurationError(
                "slowapi default_limits given as a callable are not supported; use a limit string"
            )
        items += [limit.limit for limit in group]
    if not items:
        return None
    return Policy(DEFAULT_POLICY, tuple(items), key=_key(limiter._key_func, client))
