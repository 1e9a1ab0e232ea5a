"""The matched route template of a request, read from the scope after routing."""

from __future__ import annotations

from typing import Any

from starlette.types import Scope


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
    for route in recorded_routes(scope):
        template = getattr(route, "path_format", None)
        if isinstance(template, str) and route is not outer[0] and route is not outer[1]:
            break
    else:
        return None
    mounted = scope.get("root_path", "")
    if len(mounted) > len(root_path) and mounted.startswith(root_path):
        template = mounted[len(root_path) :] + template
    return template
