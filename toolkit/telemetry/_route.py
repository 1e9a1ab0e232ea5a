"""The matched route template of a request, read from the scope after routing."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from starlette.routing import Mount
from starlette.types import Scope

from toolkit._paths import route_path


def recorded_routes(scope: Scope) -> tuple[Any, Any]:
    """The routes the routers recorded in the shared scope: FastAPI's effective route context
    (included routers are nested and record their route relative to the router; the full
    template is on the context) and Starlette's ``route``, either None."""
    fastapi_scope = scope.get("fastapi")
    context = (
        fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    )
    return context, scope.get("route")


def route_template(
    scope: Scope, root_path: str, outer: tuple[Any, Any] = (None, None)
) -> str | None:
    """The template of the route that handled the request, e.g. ``/api/items/{item_id}``.

    The router records its match in the shared scope, so nothing is matched twice.
    ``root_path`` and ``outer`` are the scope's root path and :func:`recorded_routes` when the
    request entered the middleware: mounts inside append to the root path, and that prefix
    belongs to the template too; a route recorded outside (the ``Mount`` of a parent app that
    mounts this one) is not this app's match. None when no route of this app matched.
    """
    matched = None
    for route in recorded_routes(scope):
        if route is not outer[0] and route is not outer[1] and _template(route) is not None:
            matched = route
            break
    if matched is None or isinstance(matched, Mount):
        # Starlette before 1.7 records only mounts: find the plain route by its endpoint.
        matched = _route_of_endpoint(scope) or matched
    template = None if matched is None else _template(matched)
    if template is None:
        return None
    mounted = scope.get("root_path", "")
    if len(mounted) > len(root_path) and mounted.startswith(root_path):
        template = mounted[len(root_path) :] + template
    return template


def _template(route: Any) -> str | None:
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) else None


# app -> (its number of routes when read, endpoint -> the routes serving it); read once per app
# and again when routes are added.
_ENDPOINTS: weakref.WeakKeyDictionary[Any, tuple[int, dict[Any, list[Any]]]] = (
    weakref.WeakKeyDictionary()
)


def _route_of_endpoint(scope: Scope) -> Any:
    """The route whose endpoint handled the request (the router put it in the scope), among
    the routes of the app, through its mounts; None when it is not one of them."""
    app = scope.get("app")
    routes = getattr(app, "routes", None)
    endpoint = scope.get("endpoint")
    if routes is None or endpoint is None:
        return None
    try:
        known = _ENDPOINTS.get(app)
        if known is None or known[0] != len(routes):
            known = _ENDPOINTS[app] = (len(routes), _by_endpoint(routes, {}))
        candidates = known[1].get(endpoint)
    except TypeError:  # an app or endpoint that cannot be weakly referenced or hashed
        return None
    if not candidates:
        return None
    if len(candidates) > 1:  # one endpoint on several paths: the one this path matches
        path = route_path(scope)
        for route in candidates:
            if route.path_regex.match(path):
                return route
    return candidates[0]


def _by_endpoint(routes: Iterable[Any], found: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
    for route in routes:
        children = getattr(route, "routes", None) if isinstance(route, Mount) else None
        if children:
            _by_endpoint(children, found)
        elif not isinstance(route, Mount) and _template(route) is not None:
            endpoint = getattr(route, "endpoint", None)
            if endpoint is not None:
                found.setdefault(endpoint, []).append(route)
    return found
