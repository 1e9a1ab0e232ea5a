"""An app written for slowapi keeps its behaviour after a one-line change, enforced by the toolkit.

The behaviours of slowapi's own test suite, written as our own tests. Those marked by the
``implementation`` fixture run three ways: on slowapi itself (the reference), and on the
toolkit's ``SlowAPIMiddleware`` over memory and over a real Redis, with the app unchanged but
for the middleware import. The others are the toolkit's own contract: what it refuses at
startup, and how the limiter's declarations behave next to ``toolkit.install()``.
"""

# No `from __future__ import annotations`: under slowapi's own decorator, FastAPI 0.115 (the
# lowest supported) resolves string annotations in slowapi's module, where these names are unknown.

import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import slowapi.middleware
from fastapi import APIRouter, FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_ipaddr, get_remote_address
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.types import Message

import toolkit
from tests.support.asgi import lifespan
from tests.support.servers import RedisServer
from toolkit import ConfigurationError, ToolkitSettings
from toolkit.ratelimit.slowapi import SlowAPIMiddleware

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Implementation:
    """Who enforces the limiter: slowapi itself, or the toolkit on a given storage."""

    name: str
    middleware: type[Any]
    storage_uri: str
    apps: list[Starlette] = field(default_factory=list)

    @property
    def is_slowapi(self) -> bool:
        return self.name == "slowapi"


@pytest.fixture(params=["slowapi", "toolkit-memory", "toolkit-redis"])
async def implementation(request: pytest.FixtureRequest) -> AsyncIterator[Implementation]:
    if request.param == "slowapi":
        chosen = Implementation("slowapi", slowapi.middleware.SlowAPIMiddleware, "memory://")
    elif request.param == "toolkit-memory":
        chosen = Implementation("toolkit", SlowAPIMiddleware, "memory://")
    else:
        chosen = Implementation("toolkit", SlowAPIMiddleware, request.getfixturevalue("redis_url"))
    yield chosen
    for app in chosen.apps:  # stopped as a server stops them: their storage is closed
        async with lifespan(app):
            pass


def text(request: Request) -> PlainTextResponse:
    return PlainTextResponse("test")


def _route(app: Starlette, path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Starlette's ``add_route`` as a decorator (the ``@app.route`` of older Starlette)."""

    def add(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        app.add_route(path, endpoint)
        return endpoint

    return add


def build(
    implementation: Implementation, *, starlette: bool = False, **limiter_options: Any
) -> tuple[Starlette, Limiter]:
    """An app as slowapi's documentation writes it: the limiter on app.state, the 429 handler,
    the middleware. Routes are added by each test, as slowapi's own tests do."""
    limiter_options.setdefault("key_func", get_remote_address)
    limiter = Limiter(storage_uri=implementation.storage_uri, **limiter_options)
    app = Starlette() if starlette else FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    app.add_middleware(implementation.middleware)
    implementation.apps.append(app)
    return app, limiter


async def responses(
    app: Starlette,
    path: str,
    n: int = 1,
    *,
    method: str = "GET",
    client: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app, client=(client, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return [await http.request(method, path, headers=headers) for _ in range(n)]


async def statuses(app: Starlette, path: str, n: int = 1, **options: Any) -> list[int]:
    return [r.status_code for r in await responses(app, path, n, **options)]


# --- Behaviours shared with slowapi: the same test passes on slowapi and on the toolkit. ---


async def test_a_decorated_route_answers_429_once_its_limit_is_spent(
    implementation: Implementation,
) -> None:
    """Async and sync endpoints, FastAPI decorators and Starlette's add_route alike."""
    app, limiter = build(implementation, starlette=True, key_func=get_ipaddr)

    @limiter.limit("3/minute")
    async def asynchronous(request: Request) -> PlainTextResponse:
        return text(request)

    @limiter.limit("3/minute")
    def synchronous(request: Request) -> PlainTextResponse:
        return text(request)

    app.add_route("/async", asynchronous)
    app.add_route("/sync", synchronous)
    assert await statuses(app, "/async", 5) == [200, 200, 200, 429, 429]
    assert await statuses(app, "/sync", 5) == [200, 200, 200, 429, 429]
    assert (await responses(app, "/sync"))[0].json()  # a body the client can read


async def test_a_disabled_limiter_limits_nothing(implementation: Implementation) -> None:
    """Limiter(enabled=False): decorated routes, sync or async, answer as if undecorated."""
    app, limiter = build(implementation, enabled=False, default_limits=["1/minute"])

    @app.get("/async")
    @limiter.limit("1/minute")
    async def asynchronous(request: Request) -> PlainTextResponse:
        return text(request)

    @app.get("/sync")
    @limiter.limit("1/minute")
    def synchronous(request: Request) -> PlainTextResponse:
        return text(request)

    @app.get("/plain")
    def plain(request: Request) -> PlainTextResponse:
        return text(request)

    for path in ("/async", "/sync", "/plain"):
        assert await statuses(app, path, 4) == [200] * 4


async def test_default_limits_give_each_route_its_own_budget(
    implementation: Implementation,
) -> None:
    app, _ = build(implementation, default_limits=["2/minute"])

    @app.get("/a")
    async def a(request: Request) -> PlainTextResponse:
        return text(request)

    @app.get("/b")
    async def b(request: Request) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/a", 3) == [200, 200, 429]
    assert await statuses(app, "/b", 3) == [200, 200, 429]


async def test_a_decorated_limit_replaces_the_default_limits(
    implementation: Implementation,
) -> None:
    app, limiter = build(implementation, default_limits=["1/minute"])

    @app.get("/route")
    @limiter.limit("3/minute")
    async def route(request: Request) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/route", 4) == [200, 200, 200, 429]


async def test_override_defaults_false_adds_the_default_limits_to_the_route(
    implementation: Implementation,
) -> None:
    app, limiter = build(implementation, default_limits=["2/minute"])

    @app.get("/route")
    @limiter.limit("5/minute", override_defaults=False)
    async def route(request: Request) -> PlainTextResponse:
        return text(request)

    @app.get("/other")
    @limiter.limit("1/minute", override_defaults=False)
    async def other(request: Request) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/route", 3) == [200, 200, 429]  # the default binds first
    assert await statuses(app, "/other", 2) == [200, 429]  # the route's own binds first


async def test_a_key_function_without_parameters_is_one_budget_for_every_client(
    implementation: Implementation,
) -> None:
    """slowapi calls a key function with the request only if it has a ``request`` parameter:
    ``lambda: "global"`` is one budget shared by every caller."""
    app, limiter = build(implementation, key_func=lambda: "global", default_limits=["2/minute"])

    @app.get("/decorated")
    @limiter.limit("2/minute")
    async def decorated(request: Request) -> PlainTextResponse:
        return text(request)

    @app.get("/default")
    async def default(request: Request) -> PlainTextResponse:
        return text(request)

    for path in ("/decorated", "/default"):
        assert await statuses(app, path, client="10.0.0.1") == [200]
        assert await statuses(app, path, client="10.0.0.2") == [200]
        assert await statuses(app, path, client="10.0.0.3") == [429]


async def test_budgets_are_kept_per_client_by_the_key_function(
    implementation: Implementation,
) -> None:
    app, limiter = build(implementation)

    @app.get("/route")
    @limiter.limit("1/minute")
    async def route(request: Request) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/route", 2, client="10.0.0.1") == [200, 429]
    assert await statuses(app, "/route", 2, client="10.0.0.2") == [200, 429]


async def test_a_key_function_reads_the_path_parameters_of_its_route(
    implementation: Implementation,
) -> None:
    """slowapi's decorators run after routing, so a key function may key on a path parameter."""

    def by_tenant(request: Request) -> str:
        return str(request.path_params.get("tenant", ""))

    app, limiter = build(implementation, key_func=by_tenant)

    @app.get("/tenants/{tenant}/chat")
    @limiter.limit("1/minute")
    async def chat(request: Request, tenant: str) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/tenants/a/chat", 2) == [200, 429]
    assert await statuses(app, "/tenants/b/chat") == [200]  # the same client, another tenant


async def test_a_shared_limit_is_one_budget_across_its_routes(
    implementation: Implementation,
) -> None:
    app, limiter = build(implementation, starlette=True)
    shared = limiter.shared_limit("3/minute", "somescope")

    @shared
    def first(request: Request) -> PlainTextResponse:
        return text(request)

    @shared
    def second(request: Request) -> PlainTextResponse:
        return text(request)

    app.add_route("/first", first)
    app.add_route("/second", second)
    assert await statuses(app, "/first", 2) == [200, 200]
    assert await statuses(app, "/second", 2) == [200, 429]
    assert await statuses(app, "/first") == [429]


async def test_routes_added_after_the_first_request_are_read_with_their_marks(
    implementation: Implementation,
) -> None:
    """A route added once the app is serving is exempt, limited or defaulted as declared."""
    app, limiter = build(implementation, starlette=True, default_limits=["1/minute"])

    @_route(app, "/early")
    def early(request: Request) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/early", 2) == [200, 429]

    @_route(app, "/exempt-sync")
    @limiter.exempt
    def exempt_sync(request: Request) -> PlainTextResponse:
        return text(request)

    @_route(app, "/exempt-async")
    @limiter.exempt
    async def exempt_async(request: Request) -> PlainTextResponse:
        return text(request)

    @_route(app, "/limited")
    @limiter.limit("2/minute")
    def limited(request: Request) -> PlainTextResponse:
        return text(request)

    @_route(app, "/late")
    def late(request: Request) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/exempt-sync", 3) == [200] * 3
    assert await statuses(app, "/exempt-async", 3) == [200] * 3
    assert await statuses(app, "/limited", 3) == [200, 200, 429]
    assert await statuses(app, "/late", 2) == [200, 429]


async def test_an_integer_cost_spends_that_many_units(implementation: Implementation) -> None:
    app, limiter = build(implementation)

    @app.get("/ten")
    @limiter.limit("50/minute", cost=10)
    async def ten(request: Request) -> PlainTextResponse:
        return text(request)

    @app.get("/fifteen")
    @limiter.limit("50/minute", cost=15)
    async def fifteen(request: Request) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/ten", 6) == [200] * 5 + [429]
    assert await statuses(app, "/fifteen", 4) == [200] * 3 + [429]


async def test_per_method_limits_count_each_method_apart(implementation: Implementation) -> None:
    app, limiter = build(implementation)

    @app.api_route("/chat", methods=["GET", "POST"])
    @limiter.limit("1/minute", per_method=True)
    async def chat(request: Request) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/chat", method="GET") == [200]
    assert await statuses(app, "/chat", method="POST") == [200]
    assert await statuses(app, "/chat", method="GET") == [429]
    assert await statuses(app, "/chat", method="POST") == [429]


async def test_a_limit_with_methods_applies_to_those_methods_only(
    implementation: Implementation,
) -> None:
    app, limiter = build(implementation)

    @app.api_route("/chat", methods=["GET", "POST"])
    @limiter.limit("1/minute", methods=["POST"])
    async def chat(request: Request) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/chat", 3, method="GET") == [200] * 3
    assert await statuses(app, "/chat", 2, method="POST") == [200, 429]


async def test_routes_sharing_a_path_keep_their_own_limits(
    implementation: Implementation,
) -> None:
    """GET and POST on one path are two endpoints: each has its own declaration."""
    app, limiter = build(implementation, default_limits=["1/minute"])

    @app.get("/items")
    @limiter.exempt
    async def list_items(request: Request) -> PlainTextResponse:
        return text(request)

    @app.post("/items")
    @limiter.limit("2/minute")
    async def add_item(request: Request) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/items", 3) == [200] * 3
    assert await statuses(app, "/items", 3, method="POST") == [200, 200, 429]


async def test_without_default_limits_undecorated_routes_and_unknown_paths_are_not_limited(
    implementation: Implementation,
) -> None:
    app, limiter = build(implementation)

    @app.get("/plain")
    async def plain(request: Request) -> PlainTextResponse:
        return text(request)

    @app.get("/items/{item_id}")
    @limiter.limit("1/minute")
    async def item(request: Request, item_id: str) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/plain", 3) == [200] * 3
    assert await statuses(app, "/nowhere", 3) == [404] * 3


async def test_default_limits_leave_paths_without_a_route_alone(
    implementation: Implementation,
) -> None:
    app, _ = build(implementation, default_limits=["1/minute"])
    assert await statuses(app, "/nowhere", 3) == [404] * 3


async def test_headers_enabled_sends_limit_remaining_and_the_reset_as_a_unix_time(
    implementation: Implementation,
) -> None:
    app, limiter = build(implementation, headers_enabled=True)

    @app.get("/route")
    @limiter.limit("10/minute")
    async def route(request: Request) -> PlainTextResponse:
        return text(request)

    before = time.time()
    response = (await responses(app, "/route"))[0]
    assert response.headers["x-ratelimit-limit"] == "10"
    assert response.headers["x-ratelimit-remaining"] == "9"
    reset = float(response.headers["x-ratelimit-reset"])
    assert before < reset <= time.time() + 62  # a moment within the next minute, not "60"


async def test_a_refusal_names_the_limit_that_refused(implementation: Implementation) -> None:
    app, limiter = build(implementation, headers_enabled=True)

    @app.get("/route")
    @limiter.limit("5/minute;2/hour")
    async def route(request: Request) -> PlainTextResponse:
        return text(request)

    *_, refused = await responses(app, "/route", 3)
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-limit"] == "2"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert float(refused.headers["x-ratelimit-reset"]) > time.time() + 3000  # the hour's end
    assert int(refused.headers["retry-after"]) > 3000


async def test_a_route_added_under_an_included_router_is_limited_by_its_full_path(
    implementation: Implementation,
) -> None:
    app, limiter = build(implementation)
    router = APIRouter()

    @router.get("/items/{item_id}")
    @limiter.limit("2/minute")
    async def item(request: Request, item_id: int) -> PlainTextResponse:
        return text(request)

    assert isinstance(app, FastAPI)
    app.include_router(router, prefix="/api")
    assert await statuses(app, "/api/items/1", 3) == [200, 200, 429]


# --- Where the toolkit departs from slowapi, as docs/ratelimit.md says. ---


def toolkit_app(**limiter_options: Any) -> tuple[FastAPI, Limiter]:
    app, limiter = build(
        Implementation("toolkit", SlowAPIMiddleware, "memory://"), **limiter_options
    )
    assert isinstance(app, FastAPI)
    return app, limiter


async def test_budgets_are_per_route_template_not_per_url() -> None:
    """slowapi's default key_style="url" gives /items/1 and /items/2 two budgets, so a client
    that varies the URL is never limited; the toolkit keeps one budget per route template."""
    for key_style in ("url", "endpoint"):
        app, limiter = toolkit_app(key_style=key_style)

        @app.get("/items/{item_id}")
        @limiter.limit("1/minute")
        async def item(request: Request, item_id: str) -> PlainTextResponse:
            return text(request)

        assert await statuses(app, "/items/1") == [200]
        assert await statuses(app, "/items/2") == [429]


async def test_refusals_are_problem_details_and_slowapi_stops_checking() -> None:
    app, limiter = toolkit_app(headers_enabled=True)

    @app.get("/route")
    @limiter.limit("1/minute")
    async def route(request: Request) -> PlainTextResponse:
        return text(request)

    ok, refused = await responses(app, "/route", 2)
    assert ok.headers["ratelimit"].startswith('"/route";r=0;')
    assert "retry-after" not in ok.headers  # only on 429 and 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["violated-policies"] == ["/route"]
    assert limiter.enabled is False  # one limiter, not two


async def test_get_remote_address_believes_forwarded_headers_only_from_trusted_proxies() -> None:
    """slowapi's get_remote_address is the peer address; with trusted_proxies the toolkit reads
    the client behind them instead, and a client's own X-Forwarded-For changes nothing."""
    limiter = Limiter(key_func=get_remote_address)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_middleware(SlowAPIMiddleware, trusted_proxies=["10.0.0.0/8"])

    @app.get("/route")
    @limiter.limit("1/minute")
    async def route(request: Request) -> PlainTextResponse:
        return text(request)

    for client in ("192.0.2.1", "192.0.2.2"):  # two clients behind one proxy
        forwarded = {"x-forwarded-for": client}
        assert await statuses(app, "/route", 2, client="10.0.0.5", headers=forwarded) == [200, 429]
    forged = {"x-forwarded-for": "198.51.100.7"}  # sent straight by an untrusted client
    assert await statuses(app, "/route", client="192.0.2.9", headers=forged) == [200]
    assert await statuses(app, "/route", client="192.0.2.9", headers={}) == [429]


async def test_the_proxy_header_setting_names_the_header_trusted_proxies_set() -> None:
    """Behind a proxy that sends Forwarded, proxy_header="forwarded" reads it and no longer
    believes X-Forwarded-For, even from the proxy."""
    limiter = Limiter(key_func=get_remote_address)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_middleware(SlowAPIMiddleware, trusted_proxies=["10.0.0.0/8"], proxy_header="forwarded")

    @app.get("/route")
    @limiter.limit("1/minute")
    async def route(request: Request) -> PlainTextResponse:
        return text(request)

    for client in ("192.0.2.1", "192.0.2.2"):
        forwarded = {"forwarded": f"for={client}"}
        assert await statuses(app, "/route", 2, client="10.0.0.5", headers=forwarded) == [200, 429]
    other = {"x-forwarded-for": "192.0.2.3"}  # not the header named: the proxy is the caller
    assert await statuses(app, "/route", client="10.0.0.6", headers=other) == [200]
    assert await statuses(app, "/route", client="10.0.0.6", headers={}) == [429]


async def test_the_limiters_redis_storage_is_used_through_the_async_backend(
    redis_server: RedisServer, redis_url: str
) -> None:
    """slowapi's storage_uri now reaches Redis through the toolkit's async client: a stalled
    Redis no longer stalls the whole process, the request fails open within the timeout."""
    app, limiter = build(Implementation("toolkit", SlowAPIMiddleware, redis_url))

    @app.get("/route")
    @limiter.limit("2/minute")
    async def route(request: Request) -> PlainTextResponse:
        return text(request)

    async with lifespan(app):
        assert await statuses(app, "/route", 3) == [200, 200, 429]
        redis_server.pause(1.0)
        started = time.monotonic()
        assert await statuses(app, "/route", client="10.0.0.9") == [200]
        assert time.monotonic() - started < 0.5


async def test_failure_closed_answers_503_while_the_storage_does_not_answer(
    redis_server: RedisServer, redis_url: str
) -> None:
    limiter = Limiter(key_func=get_remote_address, storage_uri=redis_url)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_middleware(SlowAPIMiddleware, failure="closed")

    @app.get("/login")
    @limiter.limit("5/minute")
    async def login(request: Request) -> PlainTextResponse:
        return text(request)

    async with lifespan(app):
        assert await statuses(app, "/login") == [200]
        redis_server.pause(1.0)
        assert await statuses(app, "/login") == [503]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"failure": "sometimes"}, "failure"),
        ({"backend": "memcached://localhost:11211"}, "storage_uri"),
    ],
)
async def test_bad_middleware_options_are_refused_naming_them(
    options: dict[str, Any], named: str
) -> None:
    app = FastAPI()
    app.state.limiter = Limiter(key_func=get_remote_address)
    app.add_middleware(SlowAPIMiddleware, **options)
    with pytest.raises(ConfigurationError, match=named):
        await responses(app, "/")


async def test_the_middleware_without_a_limiter_on_the_app_is_refused() -> None:
    app = FastAPI()
    app.add_middleware(SlowAPIMiddleware)
    with pytest.raises(ConfigurationError, match=r"app\.state\.limiter"):
        await responses(app, "/")


def _two_key_functions(limiter: Limiter) -> Callable[..., Any]:
    return limiter.limit("10/minute", key_func=lambda: "all")(  # type: ignore[no-any-return]
        limiter.limit("5/minute")(_endpoint)
    )


async def _endpoint(request: Request) -> PlainTextResponse:
    return text(request)


UNSUPPORTED: dict[str, tuple[Callable[[Limiter], Callable[..., Any]], str, str]] = {
    "exempt_when": (
        lambda limiter: limiter.limit("1/minute", exempt_when=lambda: True)(_endpoint),
        "exempt_when",
        "@limiter.exempt",
    ),
    "callable cost": (
        lambda limiter: limiter.limit("5/minute", cost=lambda request: 2)(_endpoint),
        "cost",
        "integer",
    ),
    "negative cost": (
        lambda limiter: limiter.limit("5/minute", cost=-5)(_endpoint),
        "cost=-5",
        "integer",
    ),
    "callable limit": (
        lambda limiter: limiter.limit(lambda: "5/minute")(_endpoint),
        "callable",
        "limit string",
    ),
    "two key functions": (_two_key_functions, "different key functions", "one key function"),
    "unparsable limit": (
        lambda limiter: limiter.limit("five a minute")(_endpoint),
        "could not be parsed",
        "5/minute",
    ),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
async def test_what_the_toolkit_cannot_enforce_is_refused_naming_the_route_and_the_fix(
    case: str,
) -> None:
    declare, problem, fix = UNSUPPORTED[case]
    app, limiter = toolkit_app()
    app.add_api_route("/route", declare(limiter))
    with pytest.raises(ConfigurationError, match="route /route") as raised:
        await responses(app, "/route")
    message = str(raised.value)
    assert problem in message
    assert fix in message
    if case != "two key functions":
        assert "key function" not in message


async def test_a_refused_declaration_added_while_serving_keeps_the_limits_read_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing the toolkit reads at run time fails a request: the new route is logged as not
    enforced and every route keeps answering."""
    app, limiter = toolkit_app()

    @app.get("/early")
    @limiter.limit("1/minute")
    async def early(request: Request) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/early") == [200]

    @app.get("/late")
    @limiter.limit("1/minute", exempt_when=lambda: False)
    async def late(request: Request) -> PlainTextResponse:
        return text(request)

    assert await statuses(app, "/late", 2) == [200, 200]
    assert await statuses(app, "/early") == [429]
    assert "not enforced" in caplog.text
    assert "route /late" in caplog.text


async def test_a_key_function_whose_parameter_is_not_named_request_is_refused() -> None:
    def by_tenant(req: Request) -> str:  # slowapi would call it with no argument and fail
        return req.headers.get("x-tenant", "")

    app, _ = toolkit_app(key_func=by_tenant, default_limits=["1/minute"])
    app.add_api_route("/route", _endpoint)
    with pytest.raises(ConfigurationError, match=r"by_tenant.*request"):
        await responses(app, "/route")


async def startup_messages(app: Starlette) -> list[Message]:
    """What the app answers to a server's lifespan startup."""
    sent: list[Message] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


@pytest.mark.parametrize("wiring", ["middleware", "install"])
async def test_an_unsupported_declaration_fails_the_lifespan_startup(wiring: str) -> None:
    """Under a server, a refusal stops startup (``lifespan.startup.failed``) instead of
    leaving a process up that answers 500 to every request."""
    limiter = Limiter(key_func=get_remote_address)
    app = FastAPI()
    app.state.limiter = limiter
    if wiring == "install":
        toolkit.install(app, ToolkitSettings())
    else:
        app.add_middleware(SlowAPIMiddleware)

    @app.get("/route")
    @limiter.limit("1/minute", exempt_when=lambda: True)
    async def route(request: Request) -> PlainTextResponse:
        return text(request)

    sent = await startup_messages(app)
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "route /route" in sent[0]["message"]
    assert "exempt_when" in sent[0]["message"]


async def test_a_bad_middleware_option_fails_the_lifespan_startup() -> None:
    app = FastAPI()
    app.state.limiter = Limiter(key_func=get_remote_address)
    app.add_middleware(SlowAPIMiddleware, failure="sometimes")
    sent = await startup_messages(app)
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "failure" in sent[0]["message"]


UVICORN_APP = """
import uvicorn
from fastapi import FastAPI, Request
from slowapi import Limiter
from slowapi.util import get_remote_address
from toolkit.ratelimit.slowapi import SlowAPIMiddleware

limiter = Limiter(key_func=get_remote_address)
app = FastAPI()
app.state.limiter = limiter
app.add_middleware(SlowAPIMiddleware)

@app.get("/route")
@limiter.limit("1/minute", exempt_when=lambda: True)
async def route(request: Request):
    return {}

uvicorn.run(app, host="127.0.0.1", port=0, log_level="error")
"""


def test_under_uvicorn_a_refused_declaration_stops_the_server() -> None:
    done = subprocess.run(
        [sys.executable, "-c", UVICORN_APP],
        capture_output=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode != 0
    assert b"route /route" in done.stderr


# --- Next to toolkit.install(): the toolkit's backend, metrics and place, whatever the order. ---


def installed_app(
    redis_url: str, order: str, prefix: str, **limiter_options: Any
) -> tuple[FastAPI, Limiter]:
    """A slowapi app with a cached, limited route; install() and the middleware in ``order``."""
    limiter = Limiter(key_func=get_remote_address, **limiter_options)
    app = FastAPI()
    app.state.limiter = limiter
    settings = ToolkitSettings(
        backend={"url": redis_url, "key_prefix": prefix},
        cache={"routes": {"/answers/{n}": {"ttl": "1m", "public": True}}},
    )
    if order == "install-first":
        toolkit.install(app, settings)
        app.add_middleware(SlowAPIMiddleware)
    elif order == "middleware-first":
        app.add_middleware(SlowAPIMiddleware)
        toolkit.install(app, settings)
    elif order == "slowapi-own-middleware":  # the import left unchanged
        app.add_middleware(slowapi.middleware.SlowAPIMiddleware)
        toolkit.install(app, settings)
    else:  # an app that never had a slowapi middleware: decorators only
        toolkit.install(app, settings)
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.get("/answers/{n}")
    @limiter.limit("3/minute")
    async def answer(request: Request, n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/health")
    async def health(request: Request) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/plain")
    async def plain(request: Request) -> dict[str, str]:
        return {"plain": "yes"}

    return app, limiter


def rate_limit_decisions(metrics_text: str) -> dict[tuple[str, str], float]:
    families = {f.name: f for f in text_string_to_metric_families(metrics_text)}
    return {
        (s.labels["toolkit_rate_limit_policy"], s.labels["toolkit_rate_limit_result"]): s.value
        for s in families["toolkit_rate_limit_requests"].samples
        if s.name.endswith("_total")
    }


@pytest.mark.parametrize(
    "order", ["install-first", "middleware-first", "slowapi-own-middleware", "no-middleware"]
)
async def test_slowapi_limits_under_install_use_its_redis_metrics_and_place_in_any_order(
    redis_url: str, redis_server: RedisServer, order: str
) -> None:
    """The limits reach the toolkit's Redis, show on /metrics, and are checked before the
    response cache: a cached answer still spends the caller's budget."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    app, limiter = installed_app(redis_url, order, prefix, default_limits=["1/minute"])
    async with lifespan(app):
        assert await statuses(app, "/answers/1", 6) == [200] * 3 + [429] * 3
        refused = (await responses(app, "/answers/1"))[0]
        assert refused.headers["content-type"] == "application/problem+json"
        assert redis.Redis.from_url(redis_url).keys(f"{prefix}:*limits*")
        metrics = (await responses(app, "/metrics"))[0].text
        decisions = rate_limit_decisions(metrics)
        assert decisions[("/answers/{n}", "allowed")] == 3
        assert decisions[("/answers/{n}", "rejected")] == 4
        assert limiter.enabled is False  # slowapi's in-process checks are off
        # /health is never limited under install(); /metrics neither (it was read above).
        assert await statuses(app, "/health", 3) == [200] * 3
        assert await statuses(app, "/metrics", 3) == [200] * 3
        # default_limits limit undecorated routes only through a slowapi middleware, as in
        # slowapi itself.
        plain = [200, 429] if order != "no-middleware" else [200, 200]
        assert await statuses(app, "/plain", 2) == plain


async def test_under_install_the_middlewares_own_arguments_are_not_used(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """install()'s settings rule; arguments given to the middleware are named in a warning."""
    app = FastAPI()
    app.state.limiter = Limiter(key_func=get_remote_address)
    toolkit.install(app, ToolkitSettings(backend={"url": redis_url}))
    app.add_middleware(SlowAPIMiddleware, backend="memory://")
    async with lifespan(app):
        assert await statuses(app, "/nowhere") == [404]
    assert "backend" in caplog.text
    assert "TOOLKIT_" in caplog.text
