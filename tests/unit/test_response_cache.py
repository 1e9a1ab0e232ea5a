"""The response cache: what it serves, what it refuses to store, and who can never see whose."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi import APIRouter, FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import toolkit
from tests.support.asgi import (
    body_of,
    current_serving,
    headers_of,
    http_scope,
    lifespan,
    serving,
    status_of,
)
from tests.support.otel import counter_value
from tests.support.servers import free_port
from tests.support.waiting import eventually
from toolkit import ResponseCacheMiddleware, ToolkitSettings
from toolkit.backends import Backend, MemoryBackend
from toolkit.backends.redis import RedisBackend
from toolkit.cache import CacheStore, cached_response, set_current_cache
from toolkit.cache._entry import Entry, decode, encode
from toolkit.cache._keys import canonical_json, canonical_query
from toolkit.errors import ConfigurationError
from toolkit.flags import override
from toolkit.telemetry import names

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.usefixtures("served")]

# --- an origin whose endpoints count their runs ------------------------------------------------


def app_path(request: Request) -> str:
    """The app's own path, the same whichever way the app is served."""
    return request.url.path.removeprefix(current_serving().prefix)


def run_of(request: Request) -> int:
    calls: Counter[str] = request.app.state.calls
    path = app_path(request)
    calls[path] += 1
    return calls[path]


def identity_of(request: Request) -> list[str]:
    return [
        value.decode("latin-1")
        for name, value in request.scope["headers"]
        if name in (b"authorization", b"cookie")
    ]


async def me(request: Request) -> Response:
    return JSONResponse({"who": identity_of(request), "run": run_of(request)})


async def item(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["id"], "run": run_of(request)})


async def lang(request: Request) -> Response:
    return JSONResponse(
        {"lang": request.headers.get("accept-language"), "run": run_of(request)},
        headers={"vary": "Accept-Language"},
    )


async def link(request: Request) -> Response:
    return JSONResponse({"self": str(request.url), "run": run_of(request)})


async def shaped(request: Request) -> Response:
    """Answers with the status and headers the query asks for (``h=name:value``)."""
    await asyncio.sleep(float(request.query_params.get("sleep", "0")))
    headers = [h.split(":", 1) for h in request.query_params.getlist("h")]
    return Response(
        json.dumps({"run": run_of(request)}),
        status_code=int(request.query_params.get("status", "200")),
        headers={name: value for name, value in headers},
    )


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("s", request.app.state.delay)))
    return JSONResponse({"run": run_of(request), "nonce": uuid.uuid4().hex})


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"body": body.decode(), "run": run_of(request)})


CHUNKS = [f"id: {i}\ndata: token {i}; a:b={'x' * (i % 5)}\n\n".encode() for i in range(20)]


async def stream(request: Request) -> Response:
    state = request.app.state
    run = run_of(request)
    mode = request.query_params.get("mode", "")

    async def events() -> AsyncIterator[bytes]:
        for i, chunk in enumerate(CHUNKS):
            if i == 1 and mode == "gated":
                await state.gate.wait()  # set by the client once it holds the first chunk
            if i == 5 and mode == "abort":
                raise ConnectionResetError("the upstream model went away")
            yield chunk

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={
            "x-run": str(run),
            "x-semi": "a=1; b=2; c",
            "x-colon": "urn:a:b:c",
            "Link": '</a>; rel="next", </b>; rel="prev"',
        },
    )


async def held(request: Request) -> Response:
    """A stream over 200 bytes; its first run then holds until ``state.gate`` is set."""
    run = run_of(request)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x" * 300
        if run == 1:
            await request.app.state.gate.wait()
        yield b"end"

    return StreamingResponse(chunks(), headers={"x-run": str(run)})


def origin() -> Starlette:
    app = Starlette(
        routes=[
            Route("/me", me),
            Route("/pslow", slow),
            Route("/held", held),
            Route("/items/{id}", item),
            Route("/public/{id}", item),
            Route("/lang", lang),
            Route("/link", link, name="link"),
            Route("/shaped", shaped),
            Route("/slow", slow),
            Route("/echo", echo, methods=["GET", "POST"]),
            Route("/stream", stream),
        ]
    )
    app.state.calls = Counter()
    app.state.gate = asyncio.Event()
    app.state.delay = 0.2
    return app


ROUTES: dict[str, Any] = {
    "/me": {"ttl": 60},
    "/items/{id}": {"ttl": 60, "tags": ["items"]},
    "/public/{id}": {"ttl": 60, "public": True},
    "/lang": {"ttl": 60, "vary": ["accept-language"]},
    "/link": {"ttl": 60, "public": True},
    "/shaped": {"ttl": 60, "statuses": [200, 404]},
    "/slow": {"ttl": 60},
    "/pslow": {"ttl": 60, "public": True},
    "/held": {"ttl": 60},
    "/echo": {"ttl": 60, "body": True},
    "/stream": {"ttl": 60},
}


def cache(app: ASGIApp, backend: Backend, **options: Any) -> ResponseCacheMiddleware:
    options.setdefault("routes", ROUTES)
    options.setdefault("cache", CacheStore(backend))
    return ResponseCacheMiddleware(app, **options)


async def request(
    app: ASGIApp,
    path: str,
    *,
    method: str = "GET",
    query: str = "",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    chunk: int | None = None,
    on_message: Any = None,
    http_version: str = "1.1",
) -> list[Message]:
    """One request through ``app``: the messages it sent. ``chunk`` splits the body."""
    if not any(name == "host" for name, _ in headers):
        headers = [("host", "testserver"), *headers]
    scope = http_scope(path, method=method, headers=headers)
    scope["query_string"] = query.encode("latin-1")
    scope["http_version"] = http_version
    size = chunk or max(1, len(body))
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    pending: list[Message] = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()  # a client that stays until the response is sent
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if on_message is not None:
            on_message(message)

    await current_serving().wrap(app)(scope, receive, send)
    return sent


def x_cache(messages: list[Message]) -> str | None:
    return dict(headers_of(messages)).get("x-cache")


def json_of(messages: list[Message]) -> Any:
    return json.loads(body_of(messages))


def results(reader: InMemoryMetricReader, result: str) -> float:
    return counter_value(
        reader, names.CACHE_REQUESTS, **{names.CACHE_NAME: "response", names.CACHE_RESULT: result}
    )


# --- serving -------------------------------------------------------------------------------------


async def test_response_cache_replays_a_hit_exactly_with_x_cache_and_age(backend: Backend) -> None:
    """The second request gets the first one's status, headers and body, without the app,
    marked HIT with an Age; the first one was a MISS."""
    app = origin()
    cached = cache(app, backend)
    first = await request(cached, "/items/1")
    second = await request(cached, "/items/1")
    assert x_cache(first) == "MISS"
    assert x_cache(second) == "HIT"
    assert status_of(second) == status_of(first) == 200
    assert body_of(second) == body_of(first)
    own = {"x-cache", "age"}
    assert [h for h in headers_of(second) if h[0] not in own] == [
        h for h in headers_of(first) if h[0] not in own
    ]
    assert dict(headers_of(second))["age"] == "0"
    assert app.state.calls["/items/1"] == 1
    assert json_of(await request(cached, "/items/2"))["run"] == 1  # another path, another entry


async def test_response_cache_age_counts_seconds_since_the_response_was_stored(
    backend: Backend,
) -> None:
    now = [1000.0]
    cached = cache(origin(), backend, clock=lambda: now[0])
    await request(cached, "/items/1")
    now[0] += 42.7
    assert dict(headers_of(await request(cached, "/items/1")))["age"] == "42"


async def test_response_cache_passes_routes_it_does_not_cache_untouched(backend: Backend) -> None:
    """Routes not opted in, and methods a route does not cache, reach the app as if the
    cache were not there: no header, no entry."""
    app = origin()
    cached = cache(app, backend, routes={"/items/{id}": {"ttl": 60}})
    for _ in range(2):
        assert x_cache(await request(cached, "/me")) is None
        assert x_cache(await request(cached, "/echo", method="POST", body=b"{}")) is None
    assert app.state.calls["/me"] == 2


async def test_response_cache_head_and_get_are_kept_apart(backend: Backend) -> None:
    """Each method has its own entry: a HEAD answer (which a server sends without a body)
    never stands in for a GET, nor the reverse."""
    app = origin()
    cached = cache(app, backend)
    labels = [
        x_cache(await request(cached, "/items/1", method=method))
        for method in ("HEAD", "GET", "HEAD", "GET")
    ]
    assert labels == ["MISS", "MISS", "HIT", "HIT"]
    assert app.state.calls["/items/1"] == 2


# --- identity isolation --------------------------------------------------------------------------


async def test_response_cache_does_not_leak_between_identities(backend: Backend) -> None:
    """Alice's response is never served to Bob, to an anonymous caller, or to Alice with
    another cookie; each of them gets their own, and their own hits."""
    app = origin()
    cached = cache(app, backend)
    callers = [
        [("authorization", "Bearer alice")],
        [("authorization", "Bearer bob")],
        [("cookie", "session=alice")],
        [("authorization", "Bearer alice"), ("cookie", "session=other")],
        [],
    ]
    for headers in callers * 2:
        answer = json_of(await request(cached, "/me", headers=headers))
        assert answer["who"] == [value for _, value in headers]
    assert app.state.calls["/me"] == len(callers)


async def test_response_cache_public_routes_share_one_entry_across_identities(
    backend: Backend,
) -> None:
    app = origin()
    cached = cache(app, backend)
    await request(cached, "/public/1", headers=[("authorization", "Bearer alice")])
    bob = await request(cached, "/public/1", headers=[("authorization", "Bearer bob")])
    assert x_cache(bob) == "HIT"
    assert app.state.calls["/public/1"] == 1


async def test_response_cache_configured_caller_replaces_authorization_and_cookie(
    backend: Backend,
) -> None:
    """With ``caller="header:X-User"``, the user header selects the entry (one per user,
    whatever the cookie), and a caller function may be async."""
    app = origin()
    cached = cache(app, backend, caller="header:X-User")
    await request(cached, "/me", headers=[("x-user", "u1"), ("cookie", "a")])
    assert x_cache(await request(cached, "/me", headers=[("x-user", "u1"), ("cookie", "b")])) == (
        "HIT"
    )
    assert x_cache(await request(cached, "/me", headers=[("x-user", "u2")])) == "MISS"

    async def tenant(scope: Any) -> str | None:
        return dict(scope["headers"]).get(b"x-tenant", b"").decode() or None

    by_tenant = cache(origin(), backend, caller=tenant)
    await request(by_tenant, "/me", headers=[("x-tenant", "t1")])
    assert x_cache(await request(by_tenant, "/me", headers=[("x-tenant", "t1")])) == "HIT"
    assert x_cache(await request(by_tenant, "/me", headers=[("x-tenant", "t2")])) == "MISS"


async def test_response_cache_caller_function_that_raises_bypasses_the_cache(
    backend: Backend, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """A failing caller function never falls back to an identity others share (the client
    address behind a proxy would be): the request goes to the app, uncached, and the
    exception is on the span."""

    def broken(scope: Any) -> str:
        raise RuntimeError("auth service down")

    app = origin()
    cached = cache(app, backend, caller=broken)
    with tracer_provider.get_tracer("t").start_as_current_span("request"):
        for _ in range(2):
            assert x_cache(await request(cached, "/me")) == "BYPASS"
    assert app.state.calls["/me"] == 2
    (span,) = span_exporter.get_finished_spans()
    assert [e.attributes[names.HOOK] for e in span.events if e.name == "exception"] == [
        "cache.caller",
        "cache.caller",
    ]


async def test_response_cache_keys_on_host_so_a_forged_host_cannot_poison_links(
    backend: Backend,
) -> None:
    """Apps build absolute links from Host: a request with a forged Host gets its own entry,
    and the real host's callers keep getting the real links."""
    app = origin()
    cached = cache(app, backend)
    forged = await request(cached, "/link", headers=[("host", "evil.example")])
    real = await request(cached, "/link")
    assert "evil.example" in json_of(forged)["self"]
    assert x_cache(real) == "MISS"
    assert "evil.example" not in json_of(real)["self"]


async def test_response_cache_declared_vary_headers_select_the_response(backend: Backend) -> None:
    app = origin()
    cached = cache(app, backend)
    en = await request(cached, "/lang", headers=[("accept-language", "en")])
    fr = await request(cached, "/lang", headers=[("accept-language", "fr")])
    again = await request(cached, "/lang", headers=[("accept-language", "en")])
    assert (x_cache(en), x_cache(fr), x_cache(again)) == ("MISS", "MISS", "HIT")
    assert json_of(again)["lang"] == "en"
    assert json_of(fr)["lang"] == "fr"


async def test_response_cache_query_parameters_commute_but_repeats_keep_their_order(
    backend: Backend,
) -> None:
    app = origin()
    cached = cache(app, backend)
    await request(cached, "/items/1", query="a=1&b=2")
    assert x_cache(await request(cached, "/items/1", query="b=2&a=1")) == "HIT"
    await request(cached, "/items/1", query="a=1&a=2")
    assert x_cache(await request(cached, "/items/1", query="a=2&a=1")) == "MISS"
    assert x_cache(await request(cached, "/items/1", query="a=1%262")) == "MISS"


def test_canonical_query_keeps_spellings_the_app_could_read_differently_apart() -> None:
    assert canonical_query(b"b=2&a=1&c") == canonical_query(b"c&a=1&b=2") == b"a=1&b=2&c"
    assert canonical_query(b"a=1&%61=2") != canonical_query(b"%61=2&a=1")
    assert canonical_query(b"q=a+b") != canonical_query(b"q=a%20b")
    assert canonical_query(b"q=%ff") != canonical_query(b"q=%fe")


def test_canonical_json_is_independent_of_key_order_and_spacing_only() -> None:
    assert canonical_json(json.loads('{"b": [1, {"y": 2, "x": 1}], "a": "é"}')) == (
        '{"a":"é","b":[1,{"x":1,"y":2}]}'.encode()
    )
    assert canonical_json([1, 2]) != canonical_json([2, 1])
    assert canonical_json({"a": 1}) != canonical_json({"a": 1.0})
    assert canonical_json("\ud800") != canonical_json("\ud801")  # lone surrogates stay apart
    with pytest.raises(ValueError, match="JSON"):
        canonical_json(float("nan"))


# Hypothesis: many callers, paths, queries and headers; the invariant is that every response
# a caller receives is one the origin produced for that caller's identity, path and query.

IDENTITIES = [
    (),
    (("authorization", "Bearer alice"),),
    (("authorization", "Bearer bob"),),
    (("cookie", "session=alice"),),
    (("cookie", "session=bob"),),
    (("authorization", "Bearer alice"), ("cookie", "session=bob")),
    (("cookie", "a=1"), ("cookie", "b=2")),
]
noise = st.tuples(
    st.sampled_from(
        [
            "cache-control",
            "pragma",
            "clear-site-data",
            "if-none-match",
            "x-forwarded-host",
            "x-original-url",
            "accept-language",
            "x-user",
        ]
    ),
    st.sampled_from(["no-cache", "no-store, max-age=0", '"cache", "*"', "*", "evil", "en", "fr"]),
)
a_request = st.fixed_dictionaries(
    {
        "identity": st.sampled_from(range(len(IDENTITIES))),
        "path": st.one_of(
            st.sampled_from(["/me", "/lang", "/public/1"]),
            st.from_regex(r"/items/[ab1._~-]{1,2}", fullmatch=True),
        ),
        "query": st.lists(
            st.tuples(st.sampled_from(["a", "b", "q"]), st.sampled_from(["1", "2", "x y", ""])),
            max_size=2,
        ),
        "noise": st.lists(noise, max_size=3),
    }
)


async def isolated_identity_app(request: Request) -> Response:
    """Echoes what it was asked and by whom: a response that reached the wrong caller shows."""
    path = app_path(request)
    public = path.startswith("/public")
    return JSONResponse(
        {
            "who": None if public else identity_of(request),
            "path": path,
            "query": sorted(request.query_params.multi_items()),
            "lang": request.headers.get("accept-language"),
        },
        headers={"vary": "accept-language"} if path == "/lang" else None,
    )


# Redis only, not the backend fixture: the slowest test of the file (~7 s each way it is
# served), and Redis is where reads are batched across concurrent callers; the key that keeps
# callers apart is made before any backend is reached, so memory would add time, not cover.
@pytest.mark.redis
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(a_request, min_size=200, max_size=200))
async def test_response_cache_never_serves_one_identity_another_identitys_response(
    redis_url: str, batch: list[dict[str, Any]]
) -> None:
    """10,000 requests (50 batches of 200, 20 at a time) from mixed identities with generated
    paths, queries and headers, against real Redis: zero responses cross an identity, a path
    or a query, and the cache does serve hits."""
    backend = RedisBackend(redis_url, timeout=2, key_prefix="isolation")
    app = Starlette(
        routes=[
            Route(path, isolated_identity_app)
            for path in ("/me", "/lang", "/public/{id}", "/items/{id}")
        ]
    )
    cached = cache(app, backend)
    served: Counter[str | None] = Counter()

    async def one(spec: dict[str, Any]) -> None:
        identity = IDENTITIES[spec["identity"]]
        query = urlencode(spec["query"])
        messages = await request(
            cached, spec["path"], query=query, headers=[*identity, *spec["noise"]]
        )
        answer = json_of(messages)
        served[x_cache(messages)] += 1
        assert answer["path"] == spec["path"]
        assert answer["query"] == sorted([list(pair) for pair in spec["query"]])
        if not spec["path"].startswith("/public"):
            assert answer["who"] == [value for _, value in identity]
        if spec["path"] == "/lang":
            langs = [v for name, v in spec["noise"] if name == "accept-language"]
            assert answer["lang"] == (langs[0] if langs else None)

    try:
        for start in range(0, len(batch), 20):
            await asyncio.gather(*(one(spec) for spec in batch[start : start + 20]))
    finally:
        await backend.close()
    assert served["HIT"] > 0
    assert set(served) <= {"HIT", "MISS"}


# --- the server's policy, not the client's -------------------------------------------------------

CLIENT_CACHE_HEADERS = [
    ("cache-control", "no-cache"),
    ("cache-control", "no-store"),
    ("cache-control", "max-age=0"),
    ("cache-control", "no-cache, no-store, must-revalidate"),
    ("pragma", "no-cache"),
    ("clear-site-data", '"cache"'),
    ("clear-site-data", '"*"'),
    ("if-none-match", "*"),
    ("if-modified-since", "Thu, 01 Jan 2099 00:00:00 GMT"),
]


async def test_response_cache_client_headers_can_neither_bypass_nor_wipe_it(
    backend: Backend,
) -> None:
    """Cache-Control, Pragma, Clear-Site-Data and conditional headers from a client change
    nothing: every such request is a full HIT, the origin never runs again, and the entry
    is still there for everyone else afterwards."""
    app = origin()
    cached = cache(app, backend)
    first = await request(cached, "/items/1")
    for header in CLIENT_CACHE_HEADERS:
        answer = await request(cached, "/items/1", headers=[header])
        assert x_cache(answer) == "HIT", header
        assert status_of(answer) == 200
        assert body_of(answer) == body_of(first)
    assert x_cache(await request(cached, "/items/1")) == "HIT"
    assert app.state.calls["/items/1"] == 1


NEVER_STORED = [
    pytest.param(["set-cookie:session=abc; HttpOnly"], id="set-cookie"),
    pytest.param(["cache-control:private, max-age=60"], id="private"),
    pytest.param(["cache-control:Private"], id="private-upper-case"),
    pytest.param(['cache-control:private="set-cookie"'], id="private-fields"),
    pytest.param(["cache-control:no-store"], id="no-store"),
    pytest.param(["cache-control:no-cache"], id="no-cache"),
    pytest.param(["vary:*"], id="vary-star"),
    pytest.param(["vary:Accept-Language"], id="vary-undeclared"),
    pytest.param(["vary:accept-language, Cookie"], id="vary-partly-undeclared"),
]


@pytest.mark.parametrize("headers", NEVER_STORED)
async def test_response_cache_never_stores_set_cookie_private_or_unkeyable_responses(
    backend: Backend, headers: list[str]
) -> None:
    """Such a response reaches its own caller and no one else: every request runs the app,
    and from the second on the cache says BYPASS (it remembers to send them straight on)."""
    app = origin()
    cached = cache(app, backend)
    query = urlencode([("h", h) for h in headers])
    labels = [x_cache(await request(cached, "/shaped", query=query)) for _ in range(3)]
    assert labels == ["BYPASS"] * 3
    assert app.state.calls["/shaped"] == 3


async def test_response_cache_never_stores_a_response_declared_larger_than_the_cap(
    backend: Backend,
) -> None:
    app = origin()
    cached = cache(app, backend, max_body_bytes=5)  # {"run": n} is longer
    labels = [x_cache(await request(cached, "/shaped")) for _ in range(3)]
    assert labels == ["BYPASS"] * 3
    assert app.state.calls["/shaped"] == 3


@pytest.mark.parametrize("status", [201, 206, 302, 500, 503])
async def test_response_cache_never_stores_statuses_the_route_does_not_list(
    backend: Backend, status: int
) -> None:
    app = origin()
    cached = cache(app, backend)
    for _ in range(2):
        answer = await request(cached, "/shaped", query=f"status={status}")
        assert status_of(answer) == status
        assert x_cache(answer) == "BYPASS"
    assert app.state.calls["/shaped"] == 2
    assert x_cache(await request(cached, "/shaped", query="status=404")) == "MISS"
    assert x_cache(await request(cached, "/shaped", query="status=404")) == "HIT"


async def test_response_cache_uncacheable_responses_do_not_queue_callers_behind_each_other(
    backend: Backend,
) -> None:
    """Ten concurrent callers of a key whose response sets a cookie: after at most two
    leaders whose responses could not be stored, the others run side by side, not one after
    another behind the single-flight lease."""
    app = origin()
    running = [0, 0]  # now, most at once

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        running[0] += 1
        running[1] = max(running)
        try:
            await app(scope, receive, send)
        finally:
            running[0] -= 1

    cached = cache(counting, backend)
    query = "h=set-cookie:a=1&sleep=0.2"
    answers = await asyncio.gather(*(request(cached, "/shaped", query=query) for _ in range(10)))
    assert {x_cache(a) for a in answers} == {"BYPASS"}
    assert app.state.calls["/shaped"] == 10
    assert running[1] >= 8


def csrf(app: ASGIApp) -> ASGIApp:
    """Sets a ``csrftoken`` cookie on the response to any request that has none, as CSRF
    middlewares do: a client without the cookie gets a response that may not be stored."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        cookies = b"; ".join(value for name, value in scope["headers"] if name == b"cookie")
        if b"csrftoken=" in cookies:
            await app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = (b"set-cookie", b"csrftoken=fresh; Path=/; SameSite=Lax")
                message["headers"] = [*message.get("headers", ()), cookie]
            await send(message)

        await app(scope, receive, send_with_cookie)

    return middleware


TOKEN = ("cookie", "csrftoken=t1")


async def test_response_cache_a_client_without_a_cookie_does_not_disable_caching_for_others(
    backend: Backend,
) -> None:
    """A public route behind a CSRF-cookie middleware: the response to a client without the
    cookie sets one and is not stored, and the next caller's response is stored all the same:
    21 callers with the cookie cost one origin run, not 21."""
    app = origin()
    cached = cache(csrf(app), backend)
    first = await request(cached, "/public/1")
    assert "set-cookie" in dict(headers_of(first))
    labels = [x_cache(await request(cached, "/public/1", headers=[TOKEN])) for _ in range(21)]
    assert labels == ["MISS"] + ["HIT"] * 20
    assert app.state.calls["/public/1"] == 2


async def test_response_cache_a_leader_without_a_cookie_does_not_stop_its_followers_being_served(
    backend: Backend,
) -> None:
    """Twenty callers with the cookie, in this process and another, wait behind a leader
    without it: its response is not stored, one of them runs the app next, and the others are
    served that response: two origin runs in all."""
    app = origin()
    here, there = cache(csrf(app), backend), cache(csrf(app), backend)
    leader = asyncio.create_task(request(here, "/pslow"))
    await eventually(lambda: app.state.calls["/pslow"] == 1)
    followers = await asyncio.gather(
        *(request(instance, "/pslow", headers=[TOKEN]) for instance in [here, there] * 10)
    )
    assert "set-cookie" in dict(headers_of(await leader))
    assert Counter(x_cache(m) for m in followers) == Counter({"MISS": 1, "HIT": 19})
    assert len({json_of(m)["nonce"] for m in followers}) == 1
    assert app.state.calls["/pslow"] == 2


async def test_response_cache_a_refresh_that_may_not_be_stored_does_not_evict_the_stale_entry(
    backend: Backend,
) -> None:
    """A client without the cookie is served the stale entry and its background refresh gets
    a response with Set-Cookie: the stale entry stays, for everyone, until a refresh that may
    be stored replaces it."""
    now = [1000.0]
    app = origin()
    routes = {"/public/{id}": {"ttl": 10, "stale_while_revalidate": 60, "public": True}}
    cached = cache(csrf(app), backend, routes=routes, clock=lambda: now[0])
    stored = await request(cached, "/public/1", headers=[TOKEN])
    now[0] += 11

    async def served(headers: Sequence[tuple[str, str]]) -> list[Message]:
        messages = await request(cached, "/public/1", headers=headers)
        await asyncio.wait(
            list(cached._refreshes.running.values()) or [asyncio.sleep(0)], timeout=5
        )
        return messages

    assert x_cache(await served([])) == "STALE"
    again = await served([TOKEN])
    assert x_cache(again) == "STALE"
    assert body_of(again) == body_of(stored)
    assert x_cache(await request(cached, "/public/1")) == "HIT"
    assert app.state.calls["/public/1"] == 3


# --- POST bodies ---------------------------------------------------------------------------------

JSON_TYPE = ("content-type", "application/json")


async def test_response_cache_keys_post_on_the_canonical_json_body(backend: Backend) -> None:
    """Equal JSON in another key order, spacing or chunking is a hit; any other body, or the
    same body as another content type, is not. The app reads the body as sent."""
    app = origin()
    cached = cache(app, backend)
    first = await request(
        cached, "/echo", method="POST", headers=[JSON_TYPE], body=b'{"q": "hi", "n": [1, 2]}'
    )
    same = await request(
        cached,
        "/echo",
        method="POST",
        headers=[JSON_TYPE],
        body=b'{\n  "n": [1,2],\n  "q":"hi"}',
        chunk=3,
    )
    other = await request(
        cached, "/echo", method="POST", headers=[JSON_TYPE], body=b'{"q": "hi", "n": [2, 1]}'
    )
    as_text = await request(
        cached,
        "/echo",
        method="POST",
        headers=[("content-type", "text/plain")],
        body=b'{"q": "hi", "n": [1, 2]}',
    )
    assert [x_cache(m) for m in (first, same, other, as_text)] == ["MISS", "HIT", "MISS", "MISS"]
    assert json_of(first)["body"] == '{"q": "hi", "n": [1, 2]}'
    assert json_of(other)["body"] == '{"q": "hi", "n": [2, 1]}'


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"a": NaN', id="truncated"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="too-deep-and-too-large"),
        pytest.param(b'{"big": "' + b"x" * 70_000 + b'"}', id="too-large"),
    ],
)
async def test_response_cache_bypasses_bodies_it_cannot_key_and_the_app_still_reads_them(
    backend: Backend, body: bytes
) -> None:
    app = origin()
    cached = cache(app, backend)
    for _ in range(2):
        answer = await request(
            cached, "/echo", method="POST", headers=[JSON_TYPE], body=body, chunk=4096
        )
        assert x_cache(answer) == "BYPASS"
        assert json_of(answer)["body"] == body.decode()
    assert app.state.calls["/echo"] == 2


CONTENT = [
    pytest.param("GET", [("content-length", "7")], "1.1", id="content-length"),
    pytest.param("GET", [("content-length", " 7 ")], "1.1", id="content-length-spaced"),
    pytest.param("GET", [("transfer-encoding", "chunked")], "1.1", id="chunked"),
    pytest.param("GET", [], "2", id="http2-without-length"),
    pytest.param("HEAD", [("content-length", "7")], "1.1", id="head"),
]


@pytest.mark.parametrize(("method", "headers", "version"), CONTENT)
async def test_response_cache_a_body_on_a_get_does_not_reach_the_origin_or_the_entry(
    backend: Backend, method: str, headers: list[tuple[str, str]], version: str
) -> None:
    """A route that does not key on the body answers a GET or HEAD that carries one with 400
    (problem details), without running the app: the body can neither shape the stored
    response, nor be read against it, nor send requests past it to the origin."""
    app = origin()
    cached = cache(app, backend, routes={"/echo": {"ttl": 60}})
    stored = await request(cached, "/echo", method=method)
    for _ in range(3):
        refused = await request(
            cached, "/echo", method=method, headers=headers, body=b"payload", http_version=version
        )
        assert status_of(refused) == 400
        assert dict(headers_of(refused))["content-type"] == "application/problem+json"
        if method == "GET":
            assert json_of(refused)["status"] == 400
    again = await request(cached, "/echo", method=method)
    assert x_cache(again) == "HIT"
    assert body_of(again) == body_of(stored)
    assert app.state.calls["/echo"] == 1


@pytest.mark.parametrize(
    ("headers", "version"),
    [
        pytest.param([("content-length", "0")], "1.1", id="content-length-0"),
        pytest.param([("transfer-encoding", "chunked")], "1.1", id="chunked-empty"),
        pytest.param([], "2", id="http2-empty"),
    ],
)
async def test_response_cache_an_empty_body_on_a_get_is_no_body(
    backend: Backend, headers: list[tuple[str, str]], version: str
) -> None:
    app = origin()
    cached = cache(app, backend, routes={"/echo": {"ttl": 60}})
    await request(cached, "/echo")
    answer = await request(cached, "/echo", headers=headers, http_version=version)
    assert x_cache(answer) == "HIT"
    assert app.state.calls["/echo"] == 1


# --- streams -------------------------------------------------------------------------------------


async def test_response_cache_forwards_the_first_bytes_before_the_origin_finishes(
    backend: Backend,
) -> None:
    """On a miss nothing is buffered: the stream's second chunk waits until the client holds
    the first, which only works if each chunk is forwarded as it comes."""
    app = origin()
    cached = cache(app, backend)

    def release(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            app.state.gate.set()

    async with asyncio.timeout(5):
        messages = await request(cached, "/stream", query="mode=gated", on_message=release)
    assert body_of(messages) == b"".join(CHUNKS)


async def test_response_cache_replays_a_stream_byte_exact_with_identical_headers(
    backend: Backend,
) -> None:
    """The replay has every header the stream had, in order, values with ; : = and ,
    intact, and the same bytes."""
    app = origin()
    cached = cache(app, backend)
    live = await request(cached, "/stream")
    replay = await request(cached, "/stream")
    assert (x_cache(live), x_cache(replay)) == ("MISS", "HIT")
    assert len([m for m in live if m["type"] == "http.response.body"]) > 2  # it did stream
    assert body_of(replay) == body_of(live) == b"".join(CHUNKS)
    start = next(m for m in replay if m["type"] == "http.response.start")
    live_start = next(m for m in live if m["type"] == "http.response.start")
    assert list(start["headers"])[:-2] == list(live_start["headers"])[:-1]
    assert dict(headers_of(replay))["x-semi"] == "a=1; b=2; c"
    assert dict(headers_of(replay))["x-colon"] == "urn:a:b:c"
    assert app.state.calls["/stream"] == 1


def body_messages(messages: list[Message]) -> list[tuple[bytes, bool]]:
    """Each body message's bytes and ``more_body``, empty closing messages left out."""
    return [
        (bytes(m.get("body", b"")), bool(m.get("more_body", False)))
        for m in messages
        if m["type"] == "http.response.body" and (m.get("body") or m.get("more_body"))
    ]


async def test_response_cache_replays_a_stream_with_its_original_chunking(
    backend: Backend,
) -> None:
    """A hit sends one body message per chunk the app sent (more_body on all but the last),
    as the live stream did: a server-sent events client sees the same events arrive one by
    one, not one block (before, the replay was a single message)."""
    app = origin()
    cached = cache(app, backend)
    live = await request(cached, "/stream")
    replay = await request(cached, "/stream")
    assert (x_cache(live), x_cache(replay)) == ("MISS", "HIT")
    chunks = body_messages(replay)
    assert [body for body, _ in chunks] == CHUNKS
    assert [more for _, more in chunks] == [True] * (len(CHUNKS) - 1) + [False]
    assert [body for body, _ in body_messages(live)] == CHUNKS


async def test_an_installed_apps_cached_sse_route_replays_event_by_event(
    backend_url: str,
) -> None:
    """Through the whole stack of a FastAPI app with install(): an SSE route in the cache
    settings streams its events on a miss and replays them, one message each, on a hit."""
    events = [f'data: {{"token": {i}}}\n\n'.encode() for i in range(12)]
    app = FastAPI()

    @app.get("/answers/{id}")
    async def answer(id: str) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for event in events:
                await asyncio.sleep(0)
                yield event

        return StreamingResponse(chunks(), media_type="text/event-stream")

    toolkit.install(
        app,
        ToolkitSettings(
            cache={"routes": {"/answers/{id}": {"ttl": "1m", "public": True}}},
            backend={"url": backend_url, "timeout": 2},
            telemetry={"prometheus": False},
        ),
    )
    async with lifespan(app):
        live = await request(app, "/answers/1")
        replay = await request(app, "/answers/1")
    assert (x_cache(live), x_cache(replay)) == ("MISS", "HIT")
    assert [body for body, _ in body_messages(replay)] == events
    assert [body for body, _ in body_messages(live)] == events


async def test_response_cache_never_stores_a_stream_the_origin_broke_off(
    backend: Backend,
) -> None:
    app = origin()
    cached = cache(app, backend)
    for _ in range(2):
        # Starlette 0.40 (the lowest supported) raises it inside an ExceptionGroup.
        with pytest.raises((ConnectionResetError, ExceptionGroup)) as raised:
            await request(cached, "/stream", query="mode=abort")
        error: BaseException = raised.value
        while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        assert isinstance(error, ConnectionResetError)
    assert app.state.calls["/stream"] == 2  # the first was not stored, nor marked to pass


async def test_response_cache_streams_an_oversized_response_whole_and_does_not_store_it(
    backend: Backend,
) -> None:
    app = origin()
    cached = cache(app, backend, max_body_bytes=200)
    first = await request(cached, "/stream")
    second = await request(cached, "/stream")
    assert body_of(first) == body_of(second) == b"".join(CHUNKS)
    # Each start went out before the body grew past the cap; neither was stored.
    assert x_cache(first) == x_cache(second) == "MISS"
    assert app.state.calls["/stream"] == 2


# --- single flight, staleness, invalidation -------------------------------------------------------


async def test_response_cache_runs_the_origin_once_for_concurrent_callers(
    backend: Backend,
) -> None:
    app = origin()
    cached = cache(app, backend)
    answers = await asyncio.gather(*(request(cached, "/slow") for _ in range(50)))
    assert app.state.calls["/slow"] == 1
    assert len({body_of(a) for a in answers}) == 1
    assert Counter(x_cache(a) for a in answers) == Counter({"MISS": 1, "HIT": 49})


@pytest.mark.parametrize("where", ["same process", "another process"])
async def test_response_cache_follower_cut_by_its_deadline_is_answered_504_without_the_app(
    backend: Backend,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    where: str,
) -> None:
    """A follower whose request budget ends before the held leader stores (queued in this
    process, or polling the lease from another) does not run the app with no time left: it
    raises DeadlineExceeded, which the deadline middleware answers 504; its decision is
    wait_deadline, in the metric and in its lookup event. The leader's response is still
    stored and served to the next caller."""
    app = origin()
    store = CacheStore(backend, meter_provider=meter_provider)
    leading = cache(app, backend, cache=store)
    following = (
        leading if where == "same process" else cache(app, backend, cache=CacheStore(backend))
    )
    leader = asyncio.create_task(request(leading, "/stream", query="mode=gated"))
    await eventually(lambda: app.state.calls["/stream"] == 1)
    budgeted = toolkit.DeadlineMiddleware(following, meter_provider=meter_provider)
    with tracer_provider.get_tracer("t").start_as_current_span("follower"):
        follower = await request(
            budgeted, "/stream", query="mode=gated", headers=[("request-timeout", "0.2")]
        )
    assert status_of(follower) == 504
    assert app.state.calls["/stream"] == 1  # the follower never ran the app
    if where == "same process":  # the other store's metrics are not read here
        assert results(metric_reader, names.CACHE_WAIT_DEADLINE) == 1
    (span,) = span_exporter.get_finished_spans()
    lookups = [e for e in span.events if e.name == names.CACHE_LOOKUP_EVENT]
    assert [e.attributes[names.CACHE_RESULT] for e in lookups] == [names.CACHE_WAIT_DEADLINE]
    assert span.attributes is not None
    assert span.attributes[names.DEADLINE_EXPIRED] is True
    app.state.gate.set()
    assert status_of(await leader) == 200
    assert x_cache(await request(following, "/stream", query="mode=gated")) == "HIT"
    assert app.state.calls["/stream"] == 1


async def test_response_cache_follower_whose_cache_wait_runs_first_runs_the_app_itself(
    backend: Backend, metric_reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    """With a deadline longer than ``cache.wait``, the follower waits ``cache.wait`` for the
    held leader and then runs the app itself (the documented fallback), counted as
    wait_timeout."""
    app = origin()
    cached = cache(app, backend, cache=CacheStore(backend, meter_provider=meter_provider), wait=0.1)
    leader = asyncio.create_task(request(cached, "/stream", query="mode=gated"))
    await eventually(lambda: app.state.calls["/stream"] == 1)
    with toolkit.deadline(10):
        following = asyncio.create_task(request(cached, "/stream", query="mode=gated"))
    await eventually(lambda: app.state.calls["/stream"] == 2)  # gave up, ran the app
    app.state.gate.set()
    follower = await following
    assert x_cache(follower) == "MISS"
    assert results(metric_reader, names.CACHE_WAIT_TIMEOUT) == 1
    assert results(metric_reader, names.CACHE_WAIT_DEADLINE) == 0
    await leader


async def test_response_cache_a_leader_over_the_size_cap_does_not_hold_its_followers(
    backend: Backend,
) -> None:
    """The leader's stream outgrows max_body_bytes and then hangs: the callers waiting for it,
    in this process and another, go on at once (to the app, since such a response is never
    stored), long before the leader ends or cache.wait (60 s) runs out."""
    app = origin()
    here, there = (cache(app, backend, max_body_bytes=200) for _ in range(2))
    first_bytes = asyncio.Event()

    def on_message(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            first_bytes.set()

    leader = asyncio.create_task(request(here, "/held", on_message=on_message))
    await asyncio.wait_for(first_bytes.wait(), 10)
    async with asyncio.timeout(20):
        followers = await asyncio.gather(*(request(i, "/held") for i in [here, there] * 5))
    assert not leader.done()
    assert {body_of(m) for m in followers} == {b"x" * 300 + b"end"}
    app.state.gate.set()
    assert body_of(await leader) == b"x" * 300 + b"end"


async def test_response_cache_queued_followers_do_not_wait_for_a_leader_over_the_size_cap(
    backend: Backend,
) -> None:
    """Callers already queued behind a leader, in this process and another, go on the moment
    its stream passes the size cap, while the leader's stream still hangs."""
    app = origin()
    leading, start = asyncio.Event(), asyncio.Event()

    async def late(scope: Scope, receive: Receive, send: Send) -> None:
        if app.state.calls["/held"] == 0:
            leading.set()
            await start.wait()  # the leader's stream begins once the others have queued
        await app(scope, receive, send)

    here, there = (cache(late, backend, max_body_bytes=200) for _ in range(2))
    leader = asyncio.create_task(request(here, "/held"))
    await asyncio.wait_for(leading.wait(), 10)  # it holds the key: the others follow it
    followers = [asyncio.create_task(request(i, "/held")) for i in [here, there] * 5]
    # Time for the followers to queue; the verdict does not depend on it (a follower that
    # arrives after the leader's refusal must not wait either).
    await asyncio.sleep(0.2)
    assert not any(f.done() for f in followers)
    start.set()
    async with asyncio.timeout(20):
        answers = await asyncio.gather(*followers)
    assert not leader.done()
    assert {body_of(m) for m in answers} == {b"x" * 300 + b"end"}
    app.state.gate.set()
    assert body_of(await leader) == b"x" * 300 + b"end"


async def test_response_cache_a_leader_that_stops_reading_does_not_hold_its_followers(
    backend: Backend,
) -> None:
    """The leader's client takes the response start and then reads nothing: the response is
    stored as soon as the app has produced it, and the callers waiting for it, in this process
    and another, are served it at once."""
    app = origin()
    here, there = cache(app, backend), cache(app, backend)
    scope = http_scope("/slow", headers=[("host", "testserver")])

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def stalled(message: Message) -> None:
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # a client that stopped reading

    leader = asyncio.create_task(current_serving().wrap(here)(scope, receive, stalled))
    await eventually(lambda: app.state.calls["/slow"] == 1)
    async with asyncio.timeout(20):
        followers = await asyncio.gather(*(request(i, "/slow") for i in [here, there] * 5))
    assert {x_cache(m) for m in followers} == {"HIT"}
    assert app.state.calls["/slow"] == 1
    assert not leader.done()
    leader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await leader


async def test_response_cache_a_client_that_fails_does_not_stop_the_response_being_stored(
    backend: Backend,
) -> None:
    """The leader's connection fails as its response is sent: the error still reaches the
    server (as without the cache), and the complete response the app produced is stored."""
    app = origin()
    cached = cache(app, backend)
    scope = http_scope("/items/1", headers=[("host", "testserver")])

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def broken(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("connection reset by peer")

    with pytest.raises(OSError, match="reset"):
        await current_serving().wrap(cached)(scope, receive, broken)
    assert x_cache(await request(cached, "/items/1")) == "HIT"
    assert app.state.calls["/items/1"] == 1


async def test_response_cache_serves_stale_while_one_background_refresh_runs(
    backend: Backend,
) -> None:
    """Past its ttl, within stale_while_revalidate, the old response is served at once
    (STALE) while one refresh replays the request; then the new one is a HIT."""
    now = [1000.0]
    app = origin()
    cached = cache(
        app,
        backend,
        routes={"/slow": {"ttl": 10, "stale_while_revalidate": 60}},
        clock=lambda: now[0],
    )
    first = json_of(await request(cached, "/slow", query="s=0.1"))
    now[0] += 11
    started = time.monotonic()
    stale = await asyncio.gather(*(request(cached, "/slow", query="s=0.1") for _ in range(5)))
    assert time.monotonic() - started < 0.1  # nobody waited for the origin
    assert {x_cache(m) for m in stale} == {"STALE"}
    assert {json_of(m)["nonce"] for m in stale} == {first["nonce"]}
    assert {dict(headers_of(m))["age"] for m in stale} == {"11"}
    refreshes = list(cached._refreshes.running.values())
    assert len(refreshes) == 1
    await asyncio.wait(refreshes, timeout=5)
    fresh = await request(cached, "/slow", query="s=0.1")
    assert x_cache(fresh) == "HIT"
    assert json_of(fresh)["nonce"] != first["nonce"]
    assert app.state.calls["/slow"] == 2  # one refresh for five stale answers
    now[0] += 100  # past ttl + stale_while_revalidate: a plain miss
    assert x_cache(await request(cached, "/slow", query="s=0")) == "MISS"


async def test_response_cache_shutdown_cancels_background_refreshes(backend: Backend) -> None:
    now = [1000.0]
    app = origin()
    cached = cache(
        app,
        backend,
        routes={"/slow": {"ttl": 1, "stale_while_revalidate": 60}},
        clock=lambda: now[0],
    )
    async with lifespan(cached):
        app.state.delay = 0
        await request(cached, "/slow")
        now[0] += 2
        app.state.delay = 30  # the refresh will hang until shutdown cancels it
        assert x_cache(await request(cached, "/slow")) == "STALE"
        await asyncio.sleep(0.05)
        assert len(cached._refreshes.running) == 1
        started = time.monotonic()
    assert time.monotonic() - started < 2
    assert not cached._refreshes.running


async def test_response_cache_tag_invalidation_empties_what_the_tag_covers(
    backend: Backend,
) -> None:
    app = origin()
    store = CacheStore(backend)
    set_current_cache(store)
    cached = cache(app, backend, cache=store)
    await request(cached, "/items/1")
    await request(cached, "/me")
    assert await toolkit.cache.invalidate(tags=["items"]) == 1
    assert x_cache(await request(cached, "/items/1")) == "MISS"
    assert x_cache(await request(cached, "/me")) == "HIT"


async def test_response_cache_a_response_computed_before_an_invalidation_is_not_stored_after_it(
    backend: Backend,
) -> None:
    """A tagged response whose origin was still running when its tag was invalidated is
    served to its caller but never stored: the next caller gets a fresh one."""
    started, release = asyncio.Event(), asyncio.Event()
    runs = Counter[str]()

    async def answer(request: Request) -> Response:
        runs["answer"] += 1
        started.set()
        await release.wait()
        return JSONResponse({"run": runs["answer"]})

    app = Starlette(routes=[Route("/answers/{id}", answer)])
    store = CacheStore(backend)
    cached = cache(app, backend, cache=store, routes={"/answers/{id}": {"ttl": 60, "tags": ["a"]}})
    first = asyncio.create_task(request(cached, "/answers/1"))
    await started.wait()
    await store.invalidate(["a"])  # while the old answer is being computed
    release.set()
    assert json_of(await first) == {"run": 1}
    second = await request(cached, "/answers/1")
    assert (x_cache(second), json_of(second)) == ("MISS", {"run": 2})
    assert x_cache(await request(cached, "/answers/1")) == "HIT"


async def test_response_cache_never_stores_a_fallbacks_answer(backend: Backend) -> None:
    """A route that answered with a @resilient fallback (the dependency failed) is not
    stored: the canned answer would outlive the outage by the route's ttl."""
    healthy = [False]

    async def canned(question: str) -> str:
        return "try again later"

    @toolkit.resilient(fallback=canned, timeout=None)
    async def model(question: str) -> str:
        if not healthy[0]:
            raise ConnectionError("the provider is down")
        return f"answer to {question}"

    async def ask(request: Request) -> Response:
        return JSONResponse({"reply": await model(request.path_params["q"])})

    app = Starlette(routes=[Route("/ask/{q}", ask)])
    cached = cache(app, backend, routes={"/ask/{q}": {"ttl": 60}})
    assert json_of(await request(cached, "/ask/why")) == {"reply": "try again later"}
    healthy[0] = True
    recovered = await request(cached, "/ask/why")
    assert (x_cache(recovered), json_of(recovered)) == ("MISS", {"reply": "answer to why"})
    assert x_cache(await request(cached, "/ask/why")) == "HIT"


# --- flags, failures, telemetry -----------------------------------------------------------------


async def test_response_cache_flag_off_is_exactly_the_app_without_it(backend: Backend) -> None:
    """Off: the same messages as the bare app, even for a request whose response is stored."""
    cached = cache(origin(), backend)
    bare = origin()
    await request(cached, "/items/1")  # stored while on
    await request(bare, "/items/1")
    with override({"cache.response": "off"}):
        through = await request(cached, "/items/1")
    assert through == await request(bare, "/items/1")
    assert x_cache(await request(cached, "/items/1")) == "HIT"  # back on: still stored


async def test_response_cache_backend_failure_serves_the_origin_and_never_a_500(
    metric_reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    """Redis unreachable: every request is answered by the app (BYPASS), quickly, nothing
    fails, and the failures are counted as ``error``. (Redis only: the memory backend
    cannot be unreachable.)"""
    backend = RedisBackend(
        f"redis://127.0.0.1:{free_port()}/0", timeout=0.05, meter_provider=meter_provider
    )
    app = origin()
    cached = cache(app, backend, cache=CacheStore(backend, meter_provider=meter_provider))
    started = time.monotonic()
    answers = [await request(cached, "/items/1") for _ in range(5)]
    answers += await asyncio.gather(*(request(cached, "/slow", query="s=0") for _ in range(5)))
    assert time.monotonic() - started < 2
    assert {status_of(a) for a in answers} == {200}
    assert {x_cache(a) for a in answers} == {"BYPASS"}
    assert app.state.calls["/items/1"] == 5
    assert results(metric_reader, names.CACHE_ERROR) == 10
    await backend.close()


async def test_response_cache_counts_each_decision_and_puts_it_on_the_span(
    backend: Backend,
    metric_reader: InMemoryMetricReader,
    meter_provider: MeterProvider,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    now = [1000.0]
    store = CacheStore(backend, meter_provider=meter_provider)
    cached = cache(
        origin(),
        backend,
        cache=store,
        clock=lambda: now[0],
        routes={**ROUTES, "/items/{id}": {"ttl": 10, "stale_while_revalidate": 60}},
    )
    tracer = tracer_provider.get_tracer("t")
    for query in ["", "", "h=set-cookie:a=b"]:
        with tracer.start_as_current_span("request"):
            path = "/shaped" if query else "/items/1"
            await request(cached, path, query=query)
    now[0] += 11
    with tracer.start_as_current_span("request"):
        await request(cached, "/items/1")
    await eventually(lambda: not cached._refreshes.running)  # the refresh it started
    assert [
        results(metric_reader, r)
        for r in (names.CACHE_MISS, names.CACHE_HIT, names.CACHE_BYPASS, names.CACHE_STALE)
    ] == [1, 1, 1, 1]
    events = [
        e
        for span in span_exporter.get_finished_spans()
        for e in span.events
        if e.name == names.CACHE_LOOKUP_EVENT
    ]
    assert [e.attributes[names.CACHE_RESULT] for e in events] == ["miss", "hit", "bypass", "stale"]
    assert all(e.attributes[names.CACHE_NAME] == "response" for e in events)
    keys = [str(e.attributes[names.CACHE_KEY]) for e in events]
    assert keys[0] == keys[1] == keys[3]
    assert keys[0].startswith("response:")
    assert len(keys[0]) == len("response:") + 40  # a hash, never the path or an identity


def test_cache_entries_round_trip_and_refuse_what_they_did_not_write() -> None:
    headers = ((b"content-type", b"text/event-stream"), (b"x-a", b"1; b=2:3"))
    raw = encode(200, headers, b"\x00body", 1.5, 60.0, 5.0)
    assert decode(raw) == Entry(200, headers, b"\x00body", 1.5, 60.0, 5.0)
    for garbage in (b"", b"\xc1", b"not msgpack at all", encode(200, (), b"", 0, 1, 0)[:-3]):
        with pytest.raises(ValueError, match="cache entry"):
            decode(garbage)
    streamed = decode(encode(200, headers, b"abcdef", 1.5, 60.0, 5.0, [1, 0, 5]))
    assert streamed.chunks() == [b"a", b"", b"bcdef"]
    assert decode(encode(200, headers, b"abc", 1.5, 60.0, 5.0, [3])) == Entry(
        200, headers, b"abc", 1.5, 60.0, 5.0
    )  # one message: stored as before the sizes were kept
    with pytest.raises(ValueError, match="do not add up"):
        decode(encode(200, headers, b"abcdef", 1.5, 60.0, 5.0, [1, 2]))


# --- configuration and markers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"ttl": 60, "methods": ["POST"]}, "body=true"),
        ({"ttl": 60, "methods": ["GET", "DELETE"]}, "never cached"),
        ({"ttl": 60, "statuses": [200, 206]}, "cannot be stored"),
    ],
)
def test_response_cache_refuses_unsafe_route_settings_at_startup(
    route: dict[str, Any], message: str
) -> None:
    # Memory only: refused while the middleware is built, before any backend is reached.
    with pytest.raises(ConfigurationError, match=message) as caught:
        ResponseCacheMiddleware(origin(), routes={"/x": route}, cache=CacheStore(MemoryBackend()))
    assert "routes./x" in str(caught.value)
    with pytest.raises(ConfigurationError, match=message):
        cached_response(**{k: v for k, v in route.items()})


def marked_app(backend: Backend) -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/v1")
    calls: Counter[str] = Counter()

    @router.get("/items/{item_id}")
    @cached_response(ttl="1m")
    async def versioned(item_id: str) -> dict[str, Any]:
        calls[item_id] += 1
        return {"id": item_id, "run": calls[item_id]}

    @cached_response(ttl=60, body=True)  # above the route decorator works too
    @app.post("/ask")
    async def ask(question: dict[str, Any]) -> dict[str, Any]:
        calls["ask"] += 1
        return {"answer": question, "run": calls["ask"]}

    @app.get("/plain")
    async def plain() -> dict[str, int]:
        calls["plain"] += 1
        return {"run": calls["plain"]}

    async def mounted(request: Request) -> Response:
        calls["mounted"] += 1
        return PlainTextResponse(str(calls["mounted"]))

    app.mount("/sub", Starlette(routes=[Route("/leaf", cached_response(ttl=60)(mounted))]))
    app.include_router(router)
    app.add_middleware(ResponseCacheMiddleware, cache=CacheStore(backend))
    app.state.calls = calls
    return app


async def test_cached_response_marks_are_found_through_included_routers_and_mounts(
    backend: Backend,
) -> None:
    app = marked_app(backend)
    async with lifespan(app):
        for path, method, body in [
            ("/v1/items/7", "GET", b""),
            ("/ask", "POST", b'{"q": 1}'),
            ("/sub/leaf", "GET", b""),
        ]:
            labels = [
                x_cache(await request(app, path, method=method, headers=[JSON_TYPE], body=body))
                for _ in range(2)
            ]
            assert labels == ["MISS", "HIT"], path
        assert x_cache(await request(app, "/plain")) is None
        # FastAPI answers 405 to HEAD on a GET route: the mark caches only what the route serves
        assert x_cache(await request(app, "/v1/items/7", method="HEAD")) is None
    assert app.state.calls == Counter({"7": 1, "ask": 1, "mounted": 1, "plain": 1})


async def test_configured_routes_override_a_mark_on_the_same_template(backend: Backend) -> None:
    app = marked_app(backend)
    app.user_middleware.clear()
    app.add_middleware(
        ResponseCacheMiddleware,
        cache=CacheStore(backend),
        routes={"/v1/items/{item_id}": {"ttl": 60, "methods": ["HEAD"]}},
    )
    for _ in range(2):
        assert x_cache(await request(app, "/v1/items/1")) is None


# --- installed: order, telemetry, admin ---------------------------------------------------------

ADMIN_TOKEN = secrets.token_urlsafe(24)


@pytest.fixture(params=["memory", "redis"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """install()'s backend: in process, or the session's Redis (emptied)."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


def installed_app(url: str, **settings: Any) -> FastAPI:
    """An app with install() on backend ``url``, caching ``/items/{item_id}`` (tag "items")."""
    app = FastAPI()
    app.state.calls = Counter()

    @app.get("/items/{item_id}")
    async def get_item(item_id: str) -> dict[str, Any]:
        app.state.calls[item_id] += 1
        return {"id": item_id, "run": app.state.calls[item_id]}

    toolkit.install(
        app,
        ToolkitSettings(
            cache={"routes": {"/items/{item_id}": {"ttl": 60, "tags": ["items"]}}},
            backend={"url": url, "timeout": 2},
            telemetry={"prometheus": False},
            admin={"tokens": {"ops": ADMIN_TOKEN}},
            **settings,
        ),
    )
    return app


async def test_installed_cache_sits_inside_the_rate_limiter(backend_url: str) -> None:
    """A hit still spends the caller's budget, and a 429 is never cached."""
    app = installed_app(backend_url, ratelimit={"routes": {"/items/{item_id}": "2/minute"}})
    async with serving(app) as http:
        answers = [await http.get("/items/1") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers.get("x-cache") for a in answers] == ["MISS", "HIT", None]


async def test_installed_cache_hits_are_traced_under_the_route_template(
    backend_url: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def get_item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    toolkit.install(
        app,
        ToolkitSettings(
            cache={"routes": {"/items/{item_id}": {"ttl": 60}}},
            backend={"url": backend_url, "timeout": 2},
            telemetry={"prometheus": False},
        ),
        tracer_provider=tracer_provider,
    )
    async with serving(app) as http:
        await http.get("/items/1")
        assert (await http.get("/items/1")).headers["x-cache"] == "HIT"
    spans = [s for s in span_exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert [s.attributes[names.HTTP_ROUTE] for s in spans] == ["/items/{item_id}"] * 2
    assert [s.name for s in spans] == ["GET /items/{item_id}"] * 2


async def test_admin_cache_invalidation_needs_a_token_and_reaches_the_response_cache(
    backend_url: str,
) -> None:
    app = installed_app(backend_url)
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    url = "/_toolkit/cache/invalidate"
    async with serving(app) as http:
        await http.get("/items/1")
        assert (await http.get("/items/1")).headers["x-cache"] == "HIT"
        refused = [
            await http.post(url, json={"tags": ["items"]}),
            await http.post(url, json={"tags": ["items"]}, headers={"authorization": "Bearer x"}),
            await http.post(url, json={"tags": []}, headers=auth),
            await http.post(url, json={"tags": "items"}, headers=auth),
            await http.post(url, content=b'{"tags": ["items"]}', headers=auth),  # not JSON type
        ]
        assert [r.status_code for r in refused] == [401, 403, 422, 422, 415]
        assert (await http.get("/items/1")).headers["x-cache"] == "HIT"  # still there
        done = await http.post(url, json={"tags": ["items"]}, headers=auth)
        assert done.status_code == 200
        assert done.json() == {"tags": ["items"], "deleted": 1}
        assert (await http.get("/items/1")).headers["x-cache"] == "MISS"


# --- behind Starlette's CORSMiddleware -----------------------------------------------------------

ORIGINS = ["https://a.example", "https://b.example"]


def cors_app(url: str, *, cors_outside: bool, vary: Sequence[str] = ()) -> FastAPI:
    """A public cached route, with Starlette's CORSMiddleware added before install() (inside
    the cache) or after it (outside)."""
    app = FastAPI()
    app.state.calls = Counter()

    @app.get("/catalog")
    async def catalog() -> dict[str, int]:
        app.state.calls["catalog"] += 1
        return {"run": app.state.calls["catalog"]}

    if not cors_outside:
        app.add_middleware(CORSMiddleware, allow_origins=ORIGINS)
    toolkit.install(
        app,
        ToolkitSettings(
            cache={"routes": {"/catalog": {"ttl": 60, "public": True, "vary": list(vary)}}},
            backend={"url": url, "timeout": 2},
            telemetry={"prometheus": False},
        ),
    )
    if cors_outside:
        app.add_middleware(CORSMiddleware, allow_origins=ORIGINS)
    return app


async def test_response_cache_inside_cors_middleware_stores_nothing_without_vary_origin(
    backend_url: str,
) -> None:
    """CORSMiddleware adds ``Vary: Origin`` to every response; inside the cache, with Origin
    not in the route's key, no response may be stored (what docs/caching.md warns of)."""
    app = cors_app(backend_url, cors_outside=False)
    async with serving(app) as http:
        answers = [await http.get("/catalog", headers={"origin": ORIGINS[0]}) for _ in range(3)]
    assert [a.headers["x-cache"] for a in answers] == ["BYPASS"] * 3
    assert app.state.calls["catalog"] == 3


async def test_response_cache_behind_cors_does_not_serve_one_origin_anothers_cors_headers(
    backend_url: str,
) -> None:
    """CORSMiddleware added after install() wraps the cache: one stored entry serves every
    origin, and each response carries the CORS headers of the request's own origin."""
    app = cors_app(backend_url, cors_outside=True)
    async with serving(app) as http:
        a = await http.get("/catalog", headers={"origin": ORIGINS[0]})
        b = await http.get("/catalog", headers={"origin": ORIGINS[1]})
        evil = await http.get("/catalog", headers={"origin": "https://evil.example"})
        none = await http.get("/catalog")
    assert [r.headers["x-cache"] for r in (a, b, evil, none)] == ["MISS", "HIT", "HIT", "HIT"]
    assert a.headers["access-control-allow-origin"] == ORIGINS[0]
    assert b.headers["access-control-allow-origin"] == ORIGINS[1]
    assert "access-control-allow-origin" not in evil.headers
    assert "access-control-allow-origin" not in none.headers
    assert app.state.calls["catalog"] == 1


async def test_response_cache_inside_cors_with_vary_origin_keeps_one_entry_per_origin(
    backend_url: str,
) -> None:
    app = cors_app(backend_url, cors_outside=False, vary=["origin"])
    async with serving(app) as http:
        answers = [
            await http.get("/catalog", headers={"origin": origin})
            for origin in (ORIGINS[0], ORIGINS[0], ORIGINS[1], ORIGINS[1])
        ]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT", "MISS", "HIT"]
    assert [a.headers["access-control-allow-origin"] for a in answers] == [
        ORIGINS[0],
        ORIGINS[0],
        ORIGINS[1],
        ORIGINS[1],
    ]
    assert app.state.calls["catalog"] == 2
