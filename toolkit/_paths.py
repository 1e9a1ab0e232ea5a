"""Path patterns in settings: route templates (``/chat/{session_id}``) and globs (``/static/*``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")


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
    """Finds the first of several patterns a path matches; literal paths cost one dict lookup."""

    __slots__ = ("_literal", "_patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self._literal: dict[str, str] = {}
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        for pattern in patterns:
            if is_literal(pattern):
                self._literal.setdefault(pattern, pattern)
            else:
                self._patterns.append((compile_pattern(pattern), pattern))

    def match(self, path: str) -> str | None:
        """The pattern ``path`` matches, or None. Literal patterns win over the others."""
        found = self._literal.get(path)
        if found is not None:
            return found
        for regex, pattern in self._patterns:
            if regex.match(path):
                return pattern
        return None

    def __bool__(self) -> bool:
        return bool(self._literal or self._patterns)


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
