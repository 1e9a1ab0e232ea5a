"""Path patterns in settings: route templates (``/chat/{session_id}``) and globs (``/static/*``),
and the path of a request they are matched against."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from starlette.types import Scope

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")


def route_path(scope: Scope) -> str:
    """The request's path relative to the app's root path: what every path the toolkit
    matches (rate-limit routes and exemptions, cached routes, excluded telemetry paths) is
    matched against, as the app's router matches its routes.

    A server given a root path (``uvicorn --root-path /api``, for a proxy that strips the
    prefix) and Starlette's ``Mount`` keep the whole path in ``path`` and the prefix in
    ``root_path`` (the ASGI convention, which Starlette's router reads since 0.35): the app
    mounted at ``/v1`` serves ``/v1/health`` as its ``/health``. A path outside the root path
    is the app's path already (servers that strip it), as it is for the router. This is
    Starlette's rule (``get_route_path``), kept here since Starlette's is private.
    """
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    rest = path[len(root_path) :]
    if not rest or rest[0] == "/":
        return rest
    return path  # "/apix" is not under "/api"


def literal_keys(pattern: str) -> tuple[str, ...]:
    """The paths a literal pattern is met by. The router's route regexes end in ``$``, which
    also matches before a final newline: ``/limited\n`` reaches ``/limited``, so it must meet
    ``/limited``'s policy and exemption (patterns with ``$`` already do). Both are keys of one
    dict, so that a request's path is looked up as it is."""
    if pattern.endswith("\n"):
        return (pattern + "\n",)
    return (pattern, pattern + "\n")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A regex matching the whole path for ``pattern``.

    ``{name}`` matches one segment and ``{name:path}`` the rest of the path, as in Starlette's
    route templates; ``*`` matches anything, including ``/``.
    """
    regex, index = "", 0
    for match in _PARAM.finditer(pattern):
        regex += _glob(pattern[index : match.start()])
        regex += ".*" if match.group(2) == "path" else "[^/]+"
        index = match.end()
    regex += _glob(pattern[index:])
    return re.compile(f"^{regex}$")


def _glob(text: str) -> str:
    return ".*".join(re.escape(part) for part in text.split("*"))


def is_literal(pattern: str) -> bool:
    """Whether ``pattern`` matches exactly one path (no parameter, no wildcard)."""
    return "*" not in pattern and _PARAM.search(pattern) is None


class PathMatcher:
    """Finds the first of several patterns a path matches; literal paths cost one dict lookup.

    Empty, it is false (``if matcher:``); callers on the request path keep ``bool(matcher)``
    (or None) rather than asking on every request."""

    __slots__ = ("literal", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.literal: dict[str, str] = {}
        """Path -> the literal pattern it meets."""
        self.patterns: list[tuple[re.Pattern[str], str]] = []
        """The other patterns, compiled, in order."""
        for pattern in patterns:
            if is_literal(pattern):
                for key in literal_keys(pattern):
                    self.literal.setdefault(key, pattern)
            else:
                self.patterns.append((compile_pattern(pattern), pattern))

    def match(self, path: str) -> str | None:
        """The pattern ``path`` matches, or None. Literal patterns win over the others."""
        found = self.literal.get(path)
        if found is not None:
            return found
        for regex, pattern in self.patterns:
            if regex.match(path):
                return pattern
        return None

    def __bool__(self) -> bool:
        return bool(self.literal or self.patterns)


def route_endpoints(
    routes: Iterable[Any], prefix: str = ""
) -> Iterator[tuple[str, Any, set[str] | None]]:
    """(template, endpoint, methods) of every route of an app, through mounts and included
    routers: for the middlewares that read marks left on endpoints by decorators."""
    try:  # FastAPI keeps included routers nested; this walks them with their full paths
        from fastapi.routing import iter_route_contexts

        routes = iter_route_contexts(list(routes))
    except ImportError:
        pass
    for route in routes:
        template = getattr(route, "path_format", None)
        endpoint = getattr(route, "endpoint", None)
        if template is None:
            continue
        if endpoint is None:
            children = getattr(route, "routes", None)
            if children:
                yield from route_endpoints(children, prefix + template.removesuffix("/{path}"))
            continue
        yield prefix + template, endpoint, getattr(route, "methods", None)
