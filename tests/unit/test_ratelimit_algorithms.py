"""Every algorithm's decisions and response fields, on memory and on real Redis."""

from __future__ import annotations

import json
import re

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.support.asgi import body_of, call, headers_of, http_scope, status_of
from toolkit import RateLimitMiddleware
from toolkit.backends import Backend, MemoryBackend
from toolkit.backends.redis import RedisBackend
from toolkit.ratelimit.algorithms import MAX_REMEMBERED_KEYS, Gcra
from toolkit.ratelimit.policies import Policy, PolicyTable, RoutePolicy

pytestmark = pytest.mark.anyio

ALGORITHMS = ["gcra", "fixed-window", "moving-window", "sliding-window-counter"]


async def ok(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


def limited(backend: Backend, algorithm: str, **options: object) -> RateLimitMiddleware:
    app = Starlette(routes=[Route("/chat", ok, methods=["GET", "POST"]), Route("/health", ok)])
    return RateLimitMiddleware(app, backend=backend, algorithm=algorithm, **options)  # type: ignore[arg-type]


def field(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in headers if k == name]
    assert len(values) <= 1, f"{name} sent {len(values)} times"
    return values[0] if values else None


def parse_ratelimit(value: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r";(\w)=(\d+)", value)}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_each_algorithm_admits_the_limit_then_answers_429(
    backend: Backend, algorithm: str
) -> None:
    app = limited(backend, algorithm, limit="3/minute")
    remaining = []
    for _ in range(3):
        messages = await call(app, http_scope("/chat"))
        assert status_of(messages) == 200
        assert body_of(messages) == b"ok"
        remaining.append(parse_ratelimit(field(headers_of(messages), "ratelimit") or "")["r"])
    assert remaining == [2, 1, 0]

    rejected = await call(app, http_scope("/chat"))
    assert status_of(rejected) == 429
    headers = headers_of(rejected)
    retry_after = int(field(headers, "retry-after") or 0)
    reset = parse_ratelimit(field(headers, "ratelimit") or "")["t"]
    assert 1 <= retry_after <= 60
    assert retry_after >= reset  # never invites the client back before the reset
    assert field(headers, "content-type") == "application/problem+json"
    problem = json.loads(body_of(rejected))
    assert problem["status"] == 429
    assert problem["violated-policies"] == ["default"]
    assert problem["type"].endswith("#quota-exceeded")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_each_algorithm_describes_its_policy(backend: Backend, algorithm: str) -> None:
    app = limited(backend, algorithm, limit="10/minute;100/day")
    headers = headers_of(await call(app, http_scope("/chat")))
    assert field(headers, "ratelimit-policy") == (
        '"default/60s";q=10;w=60, "default/86400s";q=100;w=86400'
    )
    value = field(headers, "ratelimit") or ""
    assert value.startswith('"default/60s";r=9;')  # the minute limit constrains most


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_each_algorithm_weighs_routes_by_cost(backend: Backend, algorithm: str) -> None:
    app = limited(backend, algorithm, routes={"/chat": {"limit": "10/minute", "cost": 4}})
    statuses = [status_of(await call(app, http_scope("/chat"))) for _ in range(3)]
    assert statuses == [200, 200, 429]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_each_algorithm_keeps_callers_apart(backend: Backend, algorithm: str) -> None:
    app = limited(backend, algorithm, limit="1/minute", caller="api_key")
    alice = [("x-api-key", "alice")]
    assert status_of(await call(app, http_scope("/chat", headers=alice))) == 200
    assert status_of(await call(app, http_scope("/chat", headers=alice))) == 429
    assert status_of(await call(app, http_scope("/chat", headers=[("x-api-key", "bob")]))) == 200


@pytest.mark.parametrize("style", ["legacy", "both", "none"])
async def test_header_styles(backend: Backend, style: str) -> None:
    app = limited(backend, "gcra", limit="5/minute", headers=style)
    headers = headers_of(await call(app, http_scope("/chat")))
    assert (field(headers, "x-ratelimit-limit") == "5") == (style in ("legacy", "both"))
    assert (field(headers, "x-ratelimit-remaining") == "4") == (style in ("legacy", "both"))
    assert (field(headers, "ratelimit") is not None) == (style == "both")
    assert field(headers, "retry-after") is None  # only on 429 and 503


async def test_gcra_decides_in_process_without_awaiting_as_it_does_awaiting() -> None:
    """On the memory backend GCRA has a decision that awaits nothing (what the middleware
    calls), and it answers every request as the awaited one does; Redis has none."""
    now = [1000.0]
    policy = Policy.parse("chat", "3/second")
    instant = Gcra(MemoryBackend(clock=lambda: now[0]))
    awaited = Gcra(MemoryBackend(clock=lambda: now[0]))
    assert instant.acquire_now is not None
    decisions = []
    for _ in range(8):
        decision = instant.acquire_now("caller", policy)
        assert decision == await awaited.acquire("caller", policy)
        decisions.append(decision.allowed)
        now[0] += 0.1
    assert decisions == [True, True, True, False, True, False, False, True]
    assert Gcra(RedisBackend("redis://127.0.0.1:1", timeout=0.1)).acquire_now is None


def test_gcra_remembers_the_storage_keys_of_a_bounded_number_of_callers() -> None:
    policy = Policy.parse("chat", "1000/second")
    gcra = Gcra(MemoryBackend(clock=lambda: 1000.0))
    assert gcra.acquire_now is not None
    for caller in range(MAX_REMEMBERED_KEYS + 10):
        gcra.acquire_now(f"caller-{caller}", policy)
        assert len(gcra._keys) <= MAX_REMEMBERED_KEYS
    assert gcra.acquire_now("caller-1", policy).remaining == 998  # forgotten keys, same budget


def test_exemptions_come_before_every_route_literal_routes_before_patterns() -> None:
    """The policy table's order, whatever the kinds of the patterns: exempt (literal or
    pattern), then literal routes, then patterns in order, then the default; a literal path
    followed by a newline is that path, as the router's ``$`` makes it."""
    default = Policy.parse("default", "10/minute")
    literal = Policy.parse("/chat/help", "5/minute")
    pattern = Policy.parse("/chat/{topic}", "3/minute")
    table = PolicyTable(
        default,
        [RoutePolicy("/chat/{topic}", pattern), RoutePolicy("/chat/help", literal)],
        ["/health", "/chat/private-*"],
    )
    assert table.match("GET", "/health") is None
    assert table.match("GET", "/health\n") is None
    assert table.match("GET", "/chat/private-room") is None
    assert table.match("GET", "/chat/help") is literal
    assert table.match("GET", "/chat/help\n") is literal
    assert table.match("GET", "/chat/news") is pattern
    assert table.match("GET", "/other") is default
    exempt_literal = PolicyTable(default, [RoutePolicy("/chat/help", literal)], ["/chat/*"])
    assert exempt_literal.match("GET", "/chat/help") is None
