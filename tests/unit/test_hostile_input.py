"""Hostile input: whatever a client sends, no toolkit route or middleware answers 5xx, and no
exception escapes the ASGI app.

A real app with everything ``install()`` wires (admin routes with a token, ``/metrics``, a
rate-limited route keyed by a header, cached routes, a flag rolled out by a header) is driven
through the raw ASGI interface, below any HTTP client, so the requests can carry what a
server passes on and a client library would refuse to send: any method token, any path a
percent-decoded target gives, any query bytes, header values with any byte but CR, LF and
NUL, bodies cut short by a disconnect. The app's own endpoints are trivial and never fail,
so a 5xx, an escaped exception or a hung request is the toolkit's.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import anyio
import anyio.from_thread
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match, Mount
from starlette.types import Message

import toolkit
from tests.support.asgi import lifespan
from toolkit import ToolkitSettings
from toolkit.cache import cached_response
from toolkit.flags import declare
from toolkit.telemetry._ids import PrivateIdGenerator

TOKEN = "hostile-input-token-0123456789"
READ_TOKEN = "hostile-read-token-0123456789"
ROLLED_OUT = "test.hostile-model"
declare(ROLLED_OUT, variants={"small": "s", "large": "l"}, default="small")

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "100"))
"""Requests per surface and backend: the whole file runs in seconds, and each run draws new
ones (a failure prints the request that caused it, to be pinned as a plain test). Set the
variable for a longer hunt."""


# --- the app -----------------------------------------------------------------------------------


def hostile_app(backend_url: str) -> FastAPI:
    """Every toolkit surface, around endpoints that cannot fail."""
    app = FastAPI()

    @app.get("/open")
    @app.get("/limited")
    @app.get("/limited/{rest:path}")
    async def plain() -> Response:
        return PlainTextResponse("ok")

    @app.get("/cached/{item}")
    @cached_response(ttl="1m", vary=["accept-language"], tags=["items"])
    async def cached(item: str) -> Response:
        return PlainTextResponse(f"item {len(item)}")

    @app.post("/answers")
    @cached_response(ttl="1m", body=True, public=True, tags=["answers"])
    async def answers(request: Request) -> Response:
        try:
            body = await request.body()
        except ClientDisconnect:
            return PlainTextResponse("gone")
        return PlainTextResponse(f"answer to {len(body)} bytes")

    @app.get("/flagged")
    async def flagged() -> Response:
        return PlainTextResponse(str(toolkit.flags.variant(ROLLED_OUT)))

    toolkit.install(
        app,
        ToolkitSettings(
            backend={"url": backend_url, "timeout": 5},
            admin={"tokens": {"ops": TOKEN}, "read_tokens": {"viewer": READ_TOKEN}},
            ratelimit={
                "limit": "10000/minute",
                "routes": {"/limited": {"limit": "3/minute", "caller": "header:x-user-id"}},
                "trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8", "::1/128"],
            },
            flags={"caller": "header:x-user-id"},
            deadline={"default": "20s", "routes": {"/cached/{item}": "15s"}, "max": "30s"},
        ),
        # Recording spans, so their attributes are built too. The app's loop runs in another
        # thread while Hypothesis draws the next request, and Hypothesis fails a draw during
        # which the global random stream moved: span ids come from the toolkit's own stream
        # (the loop monitor records a span when the draw holds the loop thread off the GIL).
        tracer_provider=TracerProvider(id_generator=PrivateIdGenerator()),
    )
    return app


@dataclass(frozen=True)
class Raw:
    """One request as a server hands it to the app."""

    method: str
    raw_path: bytes
    query: bytes
    headers: list[tuple[bytes, bytes]]
    chunks: list[bytes]
    disconnect_after: int | None
    """Body chunks delivered before the client leaves; None: all, then it waits."""
    client: tuple[str, int] | None
    http_version: str

    def scope(self) -> dict[str, Any]:
        # As uvicorn does: the path is the percent-decoded target, invalid UTF-8 replaced.
        path = self.raw_path.decode("ascii")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": self.http_version,
            "method": self.method,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": self.raw_path,
            "query_string": self.query,
            "root_path": "",
            "headers": self.headers,
            "client": self.client,
            "server": ("testserver", 80),
            "state": {},
        }


@dataclass
class Answer:
    messages: list[Message]
    error: BaseException | None


async def run(app: FastAPI, raw: Raw) -> Answer:
    """Send ``raw`` through ``app``; the messages it sent and any exception that escaped."""
    sent: list[Message] = []
    pending = list(raw.chunks)
    delivered = 0
    finished = anyio.Event()

    async def receive() -> Message:
        nonlocal delivered
        if raw.disconnect_after is not None and delivered >= raw.disconnect_after:
            return {"type": "http.disconnect"}
        if pending:
            delivered += 1
            body = pending.pop(0)
            more = bool(pending) or raw.disconnect_after is not None
            return {"type": "http.request", "body": body, "more_body": more}
        await finished.wait()  # a client that sent everything waits for the answer
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            finished.set()

    error: BaseException | None = None
    try:
        with anyio.fail_after(20):
            await app(raw.scope(), receive, send)
    except Exception as exc:
        error = exc
    return Answer(sent, error)


# --- the requests ------------------------------------------------------------------------------
# A request must pass the first checks (a route, a token, a content type) to reach the later
# ones, so each is drawn as a client would send it, with the route's own input (the query of
# /history, the body of a rollout, the Accept of /metrics, the header a key is read from) drawn
# from hostile values, and at most two other parts replaced by anything.


def _clean(value: bytes) -> bytes:
    """What a server passes on in a header value: any byte but CR, LF and NUL."""
    return value.translate(None, b"\r\n\x00")


def _utf8(text: str) -> bytes:
    return _clean(text.encode("utf-8"))


def _target(path: bytes) -> bytes:
    # A request target is ASCII; anything else reaches the server percent-encoded.
    return quote(path, safe="/%").encode("ascii")


def _b64(text: bytes) -> bytes:
    return base64.b64encode(text)


def _deep(depth: int, opener: bytes, closer: bytes, inner: bytes = b"") -> bytes:
    return opener * depth + inner + closer * depth


TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
any_bytes = st.binary(max_size=64).map(_clean)
any_text = st.text(max_size=30)
# Past 309 digits an integer overflows a float; past 4300, int() refuses it.
lengths = st.one_of(st.sampled_from([20, 309, 400, 4300, 4301, 6000]), st.integers(1, 6000))
huge_digits = lengths.map(lambda n: "9" * n)
numbers = st.one_of(
    # Digits to str.isdigit(), and not all of them to int().
    st.sampled_from(["²", "\u0663", "\u0967\u0966", "\uff11", "⁵", "Ⅻ"]),
    st.sampled_from(["0", "-1", "1001", "2.5", "1e3", "0x10", " 5", "5 ", "+5", "1_0", ""]),
    huge_digits,
    any_text,
)
methods = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "get"]),
    st.text(TCHAR, min_size=1, max_size=10),
)
tails = st.one_of(
    st.binary(max_size=24),
    st.sampled_from([b"/", b"%00", b"%0A", b"%2F..", b"/../..", b"//", b"%C3%28", b"%ff", b"\\"]),
)
queries = st.one_of(
    st.lists(st.tuples(any_text, numbers), max_size=3).map(
        lambda pairs: "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs).encode()
    ),
    st.binary(max_size=32).map(lambda b: quote(b).encode()),
    st.sampled_from([b"&&", b"=", b"a=%ff&a", b"%"]),
)

valid_authorizations = st.sampled_from(
    [
        f"Bearer {TOKEN}".encode(),
        b"Basic " + _b64(f"ops:{TOKEN}".encode()),
        b"basic  " + _b64(f"ops:{TOKEN}".encode()) + b" ",
        f"Bearer {READ_TOKEN}".encode(),  # read-only: every write is refused
        b"Basic " + _b64(f"viewer:{READ_TOKEN}".encode()),
        b"Basic " + _b64(f"viewer:{TOKEN}".encode()),  # a name with another's token
    ]
)
authorizations = st.one_of(
    any_bytes.map(lambda b: b"Basic " + b),  # not base64, or not ASCII at all
    st.binary(max_size=48).map(lambda b: b"Basic " + _b64(b)),  # base64 of anything
    any_bytes.map(lambda b: b"Bearer " + b),
    st.sampled_from([b"Basic", b"Bearer", b"Basic =", b"Basic " + _b64(b"ops")]),
    any_bytes,
)
json_types = st.sampled_from([b"application/json", b"Application/JSON; charset=utf-8"])
content_types = st.one_of(
    st.sampled_from(
        [b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x"]
    ),
    any_bytes,
)
versions = st.one_of(
    st.sampled_from(["1.0.0", "0.0.4", "0.0.1", "2.0.0", "a", "1.x", "", "1..0", "1.0.0.0", "1.٣"]),
    huge_digits,
    st.text(st.characters(codec="latin-1", exclude_characters=",;\r\n\x00"), max_size=12),
)
accepts = st.one_of(
    st.builds(
        lambda media, version, tail: _utf8(f"{media}; version={version}{tail}"),
        st.sampled_from(["application/openmetrics-text", "text/plain"]),
        versions,
        st.sampled_from(["", "; escaping=allow-utf-8", "; escaping=bogus", "; q=0.5", ";x"]),
    ),
    st.sampled_from(
        [
            b"application/openmetrics-text",
            # What Prometheus 3 sends.
            b"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
            b"application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;"
            b"escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            b"text/html,*/*",
        ]
    ),
    any_bytes,
)
addresses = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]:443"),
    st.sampled_from(["127.0.0.1", "10.1.2.3", "unknown", "_hidden", "[::1", "1.2.3.4:x", ""]),
    any_text,
)
forwarded_for = st.lists(addresses, max_size=4).map(", ".join).map(_utf8)
forwarded = (
    st.lists(addresses.map(lambda a: f'for="{a}";proto=https'), max_size=3)
    .map(", ".join)
    .map(_utf8)
)
peers = st.tuples(st.sampled_from(["127.0.0.1", "10.9.8.7", "::1", "203.0.113.9"]), st.just(1))
clients = st.one_of(st.none(), st.tuples(any_text, st.integers(0, 65535)))
other_headers = st.one_of(
    st.tuples(st.just(b"authorization"), st.one_of(valid_authorizations, authorizations)),
    st.tuples(st.just(b"accept"), accepts),
    st.tuples(st.just(b"content-type"), st.one_of(json_types, content_types)),
    st.tuples(
        st.just(b"content-length"),
        st.one_of(numbers.map(_utf8), st.sampled_from([b"0", b"1", b"-1", b" 0 "])),
    ),
    st.tuples(st.just(b"transfer-encoding"), st.sampled_from([b"chunked", b"gzip", b""])),
    st.tuples(st.just(b"x-forwarded-for"), forwarded_for),
    st.tuples(st.just(b"forwarded"), forwarded),
    st.tuples(st.just(b"x-real-ip"), addresses.map(_utf8)),
    st.tuples(
        st.just(b"traceparent"),
        st.sampled_from(
            [
                b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                b"00-00000000000000000000000000000000-0000000000000000-01",
                b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ]
        ),
    ),
    st.tuples(
        st.sampled_from(
            [
                b"x-user-id",
                b"x-api-key",
                b"cookie",
                b"host",
                b"accept-language",
                b"accept-encoding",
                b"cache-control",
                b"pragma",
                b"if-none-match",
                b"range",
                b"user-agent",
                b"origin",
                b"sec-fetch-site",
                b"traceparent",
                b"tracestate",
                b"baggage",
                b"x-http-method-override",
            ]
        ),
        any_bytes,
    ),
    st.tuples(st.binary(min_size=1, max_size=16).map(bytes.lower), any_bytes),
)

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**30), 10**30),
        st.floats(allow_nan=False, allow_infinity=False),
        any_text,
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
depths = st.one_of(st.sampled_from([2, 999, 1000, 5000, 100_000]), st.integers(1, 200_000))
deep_json = st.one_of(
    depths.map(lambda n: _deep(n, b"[", b"]")),
    depths.map(lambda n: _deep(n, b'{"a":', b"}", b"1")),
)
any_body = st.one_of(
    st.binary(max_size=128),
    json_values.map(lambda value: json.dumps(value).encode()),
    deep_json,
    huge_digits.map(str.encode),
)
percentages = st.one_of(
    huge_digits,  # past 4300 digits json.loads refuses them
    lengths.map(lambda n: "-1" + "0" * n),
    st.integers(-5, 105).map(str),
    st.floats().map(json.dumps),  # NaN and Infinity included, which json.loads takes
    st.sampled_from(["1e400", "-1e400", "true", "[]", '"20"', '"²"', "null"]),
)


NOTHING = st.just(b"")
Field = tuple[bytes, st.SearchStrategy[bytes], st.SearchStrategy[bytes]]
"""A header field a route reads: its name, what a client sends, and anything else."""
AUTHORIZATION: Field = (b"authorization", valid_authorizations, authorizations)
JSON_TYPE: Field = (b"content-type", json_types, content_types)
DEADLINE: Field = (
    b"request-timeout",
    st.sampled_from([b"2.5", b"10", b"30", b"3600", b"0.5 "]),
    st.one_of(numbers.map(_utf8), any_bytes),
)
PARTS = ("method", "path", "query", "fields", "body", "client", "disconnect")


@st.composite
def request(
    draw: st.DrawFn,
    method: str,
    path: str,
    *,
    query: st.SearchStrategy[bytes] = NOTHING,
    fields: tuple[Field, ...] = (),
    body: st.SearchStrategy[bytes] = NOTHING,
) -> Raw:
    """A ``method`` request to ``path`` with ``query``, ``fields`` and ``body``, among up to
    three other header fields of any kind; often all as given, else one or two of its parts
    replaced by anything (a broken field is hostile or absent)."""
    broken = draw(st.one_of(st.just(()), st.lists(st.sampled_from(PARTS), max_size=2)))

    def part(name: str, usual: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
        return draw(hostile if name in broken else usual)

    headers = []
    for name, usual, hostile in fields:
        value = part("fields", usual, st.one_of(hostile, st.none()))
        if value is not None:
            headers.append((name, value))
    headers += draw(st.lists(other_headers, max_size=3))
    chunks, leaves = draw(chunked(part("body", body, any_body)))
    return Raw(
        method=part("method", st.just(method), methods),
        raw_path=_target(path.encode() + part("path", st.just(b""), tails)),
        query=part("query", query, queries),
        headers=draw(st.permutations(headers)),
        chunks=chunks,
        disconnect_after=leaves if "disconnect" in broken else None,
        client=part("client", peers, clients),
        http_version=draw(st.sampled_from(["1.1", "1.0", "2"])),
    )


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> tuple[list[bytes], int]:
    """``body`` cut into chunks, and how many of them arrive if the client leaves early."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    edges = [0, *cuts, len(body)]
    chunks = [body[a:b] for a, b in itertools.pairwise(edges)]
    return chunks, draw(st.integers(0, len(chunks)))


FLAGS = {"ratelimit": ["on", "off", "shadow"], ROLLED_OUT: ["small", "large"]}
odd_keys = st.one_of(
    st.sampled_from(["cache.response", "no.such-flag", "", "%00", "ä/ö", "%ff", "a" * 300]),
    any_text,
)
flag_keys = st.one_of(st.sampled_from(sorted(FLAGS)), odd_keys)


def _flag(key: str) -> str:
    return f"/_toolkit/flags/{quote(key, safe='/%')}"


def admin_reads(key: str) -> st.SearchStrategy[Raw]:
    return st.one_of(
        request("GET", "/_toolkit/", fields=(AUTHORIZATION,)),
        request("GET", "/_toolkit/flags", fields=(AUTHORIZATION,)),
        request("GET", _flag(key), fields=(AUTHORIZATION,)),
        request(
            "GET",
            "/_toolkit/history",
            query=numbers.map(lambda limit: b"limit=" + quote(limit).encode()),
            fields=(AUTHORIZATION,),
        ),
    )


status_reads = st.one_of(
    request("GET", "/_toolkit/status", fields=(AUTHORIZATION,)),
    request(
        "GET",
        "/_toolkit/stats",
        query=st.one_of(numbers.map(lambda n: b"traces=" + quote(n).encode()), queries),
        fields=(AUTHORIZATION,),
    ),
    request("POST", "/_toolkit/stats", fields=(AUTHORIZATION, JSON_TYPE), body=any_body),
)


def admin_writes(key: str) -> st.SearchStrategy[Raw]:
    """The writes to flag ``key``, mostly with one of its own variants, so that the checks
    after the variant's (the percentage) are reached too."""
    own = st.sampled_from(FLAGS.get(key, ["on"]))
    variants = st.one_of(own, own, json_values)
    write = (AUTHORIZATION, JSON_TYPE)
    return st.one_of(
        request(
            "PUT",
            _flag(key),
            fields=write,
            body=st.one_of(
                st.builds(lambda v: json.dumps({"variant": v}).encode(), variants),
                st.builds(lambda v: json.dumps({"variant": v, "by": "x"}).encode(), variants),
                deep_json,
            ),
        ),
        request(
            "PUT",
            _flag(key) + "/rollout",
            fields=write,
            body=st.builds(
                lambda v, p: f'{{"variant": {json.dumps(v)}, "percentage": {p}}}'.encode(),
                variants,
                percentages,
            ),
        ),
        request(
            "DELETE", _flag(key), fields=write, body=st.sampled_from([b"", b"{}", b" ", b"[]"])
        ),
        request("DELETE", _flag(key), fields=(AUTHORIZATION,)),  # no body, no content type
        request(
            "POST",
            "/_toolkit/cache/invalidate",
            fields=write,
            body=st.builds(lambda tags: json.dumps({"tags": tags}).encode(), json_values),
        ),
    )


subjects = (
    (b"x-user-id", st.sampled_from([b"alice", b"bob"]), any_bytes),
    (b"x-forwarded-for", forwarded_for, any_bytes),
    (b"forwarded", forwarded, any_bytes),
)
SURFACES: dict[str, st.SearchStrategy[Raw]] = {
    "admin-reads": flag_keys.flatmap(admin_reads),
    "admin-writes": flag_keys.flatmap(admin_writes),
    "status": status_reads,
    "metrics": request("GET", "/metrics", fields=((b"accept", accepts, any_bytes),)),
    "ratelimit": st.one_of(
        request("GET", "/limited", fields=subjects), request("GET", "/open", fields=subjects)
    ),
    "cache": st.one_of(
        request(
            "GET",
            "/cached/1",
            query=st.sampled_from([b"", b"a=1&b=2", b"b=2&a=1", b"a=%ff", b"a&a&a"]),
            fields=(
                (b"accept-language", st.sampled_from([b"en", b"fr"]), any_bytes),
                (b"authorization", st.sampled_from([b"Bearer a", b"Bearer b"]), any_bytes),
                (b"content-length", st.just(b"0"), st.sampled_from([b"1", b"-1", b"x", b" 0 "])),
            ),
        ),
        request(
            "POST",
            "/answers",
            fields=(JSON_TYPE,),
            body=st.one_of(json_values.map(lambda v: json.dumps(v).encode()), deep_json),
        ),
    ),
    "flags": request("GET", "/flagged", fields=subjects),
    "deadline": st.one_of(
        request("GET", "/open", fields=(DEADLINE,)),
        request("GET", "/cached/1", fields=(DEADLINE,)),
        request("POST", "/answers", fields=(DEADLINE, JSON_TYPE), body=any_body),
    ),
}


# --- the invariant -----------------------------------------------------------------------------


def assert_answered_without_server_error(raw: Raw, answer: Answer, admin: Mount) -> None:
    """One complete answer below 500 (none needed if the client left), with well-formed
    fields; problem details that say their status; every admin refusal one of them."""
    if answer.error is not None:
        raise AssertionError(f"an exception escaped the app for {raw!r}") from answer.error
    starts = [m for m in answer.messages if m["type"] == "http.response.start"]
    assert len(starts) <= 1, f"{len(starts)} response starts for {raw!r}"
    if raw.disconnect_after is None:
        assert starts, f"no answer to {raw!r}"
        last = answer.messages[-1]
        assert last["type"] == "http.response.body", raw
        assert not last.get("more_body"), raw
    if not starts:
        return
    status = starts[0]["status"]
    body = b"".join(
        m.get("body", b"") for m in answer.messages if m["type"] == "http.response.body"
    )
    if status == 504 and asked_under_a_second(raw):
        return  # the client's own budget ran out: the answer it asked for
    assert status < 500, f"{status} for {raw!r}: {body[:300]!r}"
    fields = starts[0].get("headers", [])
    for name, value in fields:
        assert isinstance(name, bytes), name
        assert isinstance(value, bytes), value
        assert name == name.lower(), name
        assert not set(name + value) & set(b"\r\n\x00"), f"a field breaks the response: {name!r}"
    content_type = dict(fields).get(b"content-type", b"")
    if content_type == b"application/problem+json" and raw.method != "HEAD" and body:
        problem = json.loads(body)
        assert problem["status"] == status, problem
        assert problem["detail"], problem
    if admin.matches(raw.scope())[0] is Match.FULL:
        assert dict(fields).get(b"cache-control") == b"no-store", (raw, fields)
        if status >= 400:
            assert content_type == b"application/problem+json", (raw, status, body[:300])


def asked_under_a_second(raw: Raw) -> bool:
    """Whether the request asked for a budget (``Request-Timeout``) short enough to run out
    on a busy machine: the only 5xx the toolkit may answer hostile input with."""
    for name, value in raw.headers:
        if name == b"request-timeout":
            text = value.strip()
            return re.fullmatch(rb"[0-9]{1,9}(?:\.[0-9]{1,9})?", text) is not None and (
                0 < float(text) < 1
            )
    return False


@dataclass
class Served:
    portal: anyio.from_thread.BlockingPortal
    app: FastAPI

    def __call__(self, raw: Raw) -> Answer:
        return self.portal.call(run, self.app, raw)

    @property
    def admin(self) -> Mount:
        """The admin routes' mount, which says which paths it takes (a path with a line feed
        inside is not one: it goes on to the app's own routes)."""
        return next(
            r for r in self.app.routes if isinstance(r, Mount) and r.name == "toolkit-admin"
        )


@pytest.fixture(params=["memory", "redis"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """The hostile app, started once for all the examples of a test, on each backend."""
    backend_url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    app = hostile_app(backend_url)
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(lifespan(app)),
    ):
        store = app.state.toolkit.store
        portal.call(lambda: store.rollout(ROLLED_OUT, "large", 50.0, by="test"))
        yield Served(portal, app)


HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("surface", sorted(SURFACES))
@HOSTILE
@given(data=st.data())
def test_no_request_gets_a_server_error_from_the_toolkit(
    served: Served, surface: str, data: st.DataObject
) -> None:
    """Admin API, status page and /stats, /metrics, rate limiter, response cache, flag
    context and request deadlines: any method, path, query, header bytes and body get a
    2xx-4xx answer (or the 504 of a budget under a second the client asked for), and nothing
    escapes the app."""
    raw = data.draw(SURFACES[surface], label="request")
    assert_answered_without_server_error(raw, served(raw), served.admin)
