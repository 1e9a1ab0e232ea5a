"""The matched route template of a request, read from the scope after routing."""

from __future__ import annotations

from typing import Any

from starlette.types import Scope


def matched_route(scope: Scope) -> Any:
    """The route the routers recorded in the shared scope, or None.

    FastAPI keeps included routers nested and records the route with its path relative to the
    router; the full template is on its effective route context, preferred when present.
    """
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        context = fastapi_scope.get("effective_route_context")
        if isinstance(getattr(context, "path_format", None), str):
            return context
    return scope.get("route")


def route_template(scope: Scope, root_path: str, outer: Any = None) -> str | None:
    """The template of the route that handled the request, e.g. ``/api/items/{item_id}``.

    The router records its match in the shared scope, so nothing is matched twice.
    ``root_path`` and ``outer`` are the scope's root path and :func:`matched_route` when the
    request entered the middleware: mounts inside append to the root path, and that prefix
    belongs to the template too; a route recorded outside (the ``Mount`` of a parent app that
    mounts this one) is not this app's match. None when no route of this app matched.
    """
    route = matched_route(scope)
    if route is None or route is outer:
        return None
    template = getattr(route, "path_format", None)
    if not isinstance(template, str):
        return None
    mounted = scope.get("root_path", "")
    if len(mounted) > len(root_path) and mounted.startswith(root_path):
        template = mounted[len(root_path) :] + template
    return template
