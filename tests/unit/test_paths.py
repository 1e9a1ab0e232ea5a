"""The path the toolkit matches its patterns against: the app's, under any root path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette._utils import get_route_path

from toolkit._paths import route_path

segments = st.lists(st.sampled_from(["api", "apix", "ap", "v1", "health", "", "{x}"]), max_size=4)
paths = segments.map(lambda parts: "/" + "/".join(parts))
root_paths = st.one_of(st.just(""), segments.map(lambda parts: "/" + "/".join(parts)))


@pytest.mark.parametrize(
    ("root_path", "path", "expected"),
    [
        ("", "/health", "/health"),
        ("/api", "/api/health", "/health"),  # uvicorn --root-path, Mount: the prefix is kept
        ("/api", "/health", "/health"),  # a server that strips it
        ("/api", "/api", ""),  # the router's own answer: no route, a redirect to /api/
        ("/api", "/api/", "/"),
        ("/api", "/apix/health", "/apix/health"),  # not under /api
        ("/api/v1", "/api/v1/items/7", "/items/7"),  # a mount under a root path
    ],
)
def test_route_path_is_the_path_relative_to_the_root_path(
    root_path: str, path: str, expected: str
) -> None:
    assert route_path({"path": path, "root_path": root_path}) == expected


@given(root_path=root_paths, path=paths, under=st.booleans())
def test_route_path_is_what_starlettes_router_matches_routes_against(
    root_path: str, path: str, under: bool
) -> None:
    """The toolkit's patterns and the app's routes see one path (Starlette's private rule,
    checked here so that a change in it shows)."""
    if under:
        path = root_path + path
    scope = {"type": "http", "path": path, "root_path": root_path}
    assert route_path(scope) == get_route_path(scope)
