"""Route setup of the response cache: which routes are cached and how, prepared once.

A route opts in through the cache settings (``routes``) or :func:`cached_response` on its
endpoint, whose mark is read when the app is first seen (routes are declared after the
middleware is added). A configured template replaces every mark on it, so operators can
retune or switch off a route's caching (``methods: ["HEAD"]``) without a deploy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from toolkit._configured import chosen
from toolkit._default import DEFAULT, Default
from toolkit._paths import route_endpoints
from toolkit.cache._keys import CREDENTIAL_HEADERS
from toolkit.settings import CacheRouteSettings
from toolkit.settings._section import validate_arguments

MARKER: Final = "__toolkit_cached_response__"
"""The attribute :func:`cached_response` sets on an endpoint."""

F = TypeVar("F", bound=Callable[..., Any])

RouteTable = dict[str, dict[str, "Route"]]
"""Route template or pattern -> method -> the prepared route."""


def cached_response(
    *,
    ttl: str | float,
    public: bool = False,
    vary: Sequence[str] = (),
    body: bool = False,
    stale_while_revalidate: str | float = 0,
    tags: Sequence[str] = (),
    methods: Sequence[str] | Default = DEFAULT,
    statuses: Sequence[int] | Default = DEFAULT,
) -> Callable[[F], F]:
    """Mark an endpoint's responses as cacheable; :class:`ResponseCacheMiddleware` reads the
    mark when the app starts. The endpoint itself is returned unchanged.

        @app.get("/answers/{id}")
        @cached_response(ttl="10m", tags=["answers"])
        async def answer(id: str): ...

    Args:
        ttl: how long a response is served from cache: seconds or ``"10m"``.
        public: the same response for every caller; leaves the caller out of the key. Leave
            False for anything that depends on who asks.
        vary: request headers whose values select the response (part of the key).
        body: key on the JSON request body (canonical form, hashed); needed to cache POST.
            A hit never runs the endpoint, so its side effects happen on misses only.
            Without it, a GET or HEAD with content is answered 400.
        stale_while_revalidate: after ``ttl``, serve the old response this long while one
            caller in the fleet refreshes it in the background.
        tags: for :func:`toolkit.cache.invalidate`.
        methods: methods cached; by default GET and HEAD (and POST when ``body``).
        statuses: statuses stored; 200 by default.

    Raises:
        ConfigurationError: an argument is invalid (named in the message).
    """
    values: dict[str, Any] = {
        "ttl": ttl,
        "public": public,
        "vary": list(vary),
        "body": body,
        "stale_while_revalidate": stale_while_revalidate,
        "tags": list(tags),
    }
    for name, given in chosen(
        "cached_response", CacheRouteSettings, {"methods": methods, "statuses": statuses}
    ).items():
        values[name] = list(given)
    settings = validate_arguments(CacheRouteSettings, values)

    def mark(endpoint: F) -> F:
        setattr(endpoint, MARKER, settings)
        return endpoint

    return mark


class RouteLabel:
    """Stands in for the router's match in ``scope["route"]`` when a hit answers before the
    router runs, so the telemetry outside still names the route (it reads ``path_format``).
    It replaces what a parent app's router put there (its ``Mount`` of this app)."""

    __slots__ = ("path_format",)

    def __init__(self, path_format: str) -> None:
        self.path_format = path_format


@dataclass(frozen=True, slots=True, eq=False)  # identity hash and equality: cheap per request
class Route:
    """One cached route, prepared: what the key covers and what may be stored."""

    pattern: str
    ttl: float
    stale: float
    public: bool
    body: bool
    tags: tuple[str, ...]
    statuses: frozenset[int]
    methods: frozenset[str]
    slots: dict[bytes, int]
    """Request header name -> its slot in the key."""
    accepted_vary: frozenset[bytes]
    """Header names a response's ``Vary`` may list: those the key covers."""
    label: RouteLabel


def prepare(
    pattern: str, settings: CacheRouteSettings, methods: frozenset[str], by_credentials: bool
) -> Route:
    """The route of ``settings`` for ``methods``; ``by_credentials`` when the caller is the
    default one, whose headers the key covers as they are."""
    keyed = [b"host"]  # apps build absolute links from it: a forged Host must not share entries
    if settings.body:
        keyed.append(b"content-type")
    if by_credentials and not settings.public:
        keyed += CREDENTIAL_HEADERS  # the default caller: who is asking
    keyed += [name.encode("latin-1") for name in settings.vary]
    slots: dict[bytes, int] = {}
    for name in keyed:
        slots.setdefault(name, len(slots))
    return Route(
        pattern=pattern,
        ttl=settings.ttl,
        stale=settings.stale_while_revalidate,
        public=settings.public,
        body=settings.body,
        tags=tuple(settings.tags),
        statuses=frozenset(settings.statuses),
        methods=methods,
        slots=slots,
        accepted_vary=frozenset(slots),
        label=RouteLabel(pattern),
    )


def route_table(
    configured: Iterable[tuple[str, CacheRouteSettings]], application: Any, by_credentials: bool
) -> RouteTable:
    """The cached routes: ``configured`` ones (from settings, checked by the settings model),
    then the endpoints of ``application`` marked by :func:`cached_response` on templates
    not configured."""
    table: RouteTable = {}
    for pattern, settings in configured:
        methods = settings.cached_methods
        route = prepare(pattern, settings, methods, by_credentials)
        table[pattern] = dict.fromkeys(methods, route)
    configured_templates = set(table)
    for template, endpoint, route_methods in route_endpoints(getattr(application, "routes", ())):
        marker = getattr(endpoint, MARKER, None)
        if not isinstance(marker, CacheRouteSettings) or template in configured_templates:
            continue
        methods = marker.cached_methods
        if route_methods is not None:
            methods &= frozenset(route_methods)
        route = prepare(template, marker, methods, by_credentials)
        for method in methods:
            table.setdefault(template, {}).setdefault(method, route)
    return table
