"""How a slowapi ``Limiter``'s declarations become the toolkit's route policies.

A route's slowapi limits become one :class:`Policy` per set of HTTP methods that spends one
budget, named by the route template (or the ``shared_limit`` scope, with ``:METHOD`` under
``per_method``), keyed by the slowapi key function called as slowapi calls it. What would
need several budgets per request, or a decision per request after routing, is refused.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import Scope

from toolkit._paths import is_literal, route_endpoints
from toolkit.errors import ConfigurationError
from toolkit.identity import CallerFunction, CallerResolver, ClientAddress
from toolkit.ratelimit.policies import Policy, RoutePolicy
from toolkit.settings import RateLimitSettings

logger = logging.getLogger("toolkit.ratelimit")

# The methods a route that accepts any method is limited for, when a limit names methods.
_ANY_METHOD = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def declared_policies(
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
    """The caller resolvers of a route's slowapi key functions, called as slowapi calls them."""

    def __init__(self, limiter: Any, client: ClientAddress) -> None:
        self._prefix = limiter._key_prefix or ""
        self._client = client
        self._resolvers: dict[tuple[int, str], CallerResolver[str]] = {}

    def resolver(self, function: Any, template: str) -> CallerResolver[str]:
        found = self._resolvers.get((id(function), template))
        if found is None:
            found = CallerResolver(self._key_function(function, template), self._client)
            self._resolvers[id(function), template] = found
        return found

    def _key_function(self, function: Any, template: str) -> CallerFunction:
        call: CallerFunction
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


def _with_request(function: Any, template: str) -> CallerFunction:
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
