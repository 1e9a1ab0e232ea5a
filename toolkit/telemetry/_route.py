"""The matched route template of a request, read from the scope after routing."""

from __future__ import annotations

from starlette.types import Scope


def route_template(scope: Scope, root_path: str) -> str | None:
    """The template of the route that handled the request, e.g. ``/api/items/{item_id}``.

    The router records its match in the shared scope, so nothing is matched twice. FastAPI
    keeps included routers nested and records the route with its path relative to the router;
    the full template is on its effective route context. ``root_path`` is the scope's value
    when the request entered the middleware: mounts append to it, and that prefix belongs to
    the template too. None when no route matched.
    """
    template = None
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        template = getattr(fastapi_scope.get("effective_route_context"), "path_format", None)
    if not isinstance(template, str):
        template = getattr(scope.get("route"), "path_format", None)
        if not isinstance(template, str):
            return None
    mounted = scope.get("root_path", "")
    if len(mounted) > len(root_path) and mounted.startswith(root_path):
        template = mounted[len(root_path) :] + template
    return template
