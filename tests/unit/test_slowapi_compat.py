"""An app written for slowapi gets its limits enforced by the toolkit after a one-line change."""

from __future__ import annotations

import time

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from slowapi import Limiter
from slowapi.util import get_remote_address

from tests.support.servers import RedisServer
from toolkit import ConfigurationError
from toolkit.ratelimit.slowapi import SlowAPIMiddleware

pytestmark = pytest.mark.anyio


def slowapi_app(storage_uri: str = "memory://", **limiter_options: object) -> FastAPI:
    """An app exactly as slowapi's documentation writes it, but for the middleware import."""
    limiter = Limiter(key_func=get_remote_address, storage_uri=storage_uri, **limiter_options)  # type: ignore[arg-type]
    app = FastAPI()
    app.state.limiter = limiter

    router = APIRouter()

    @router.get("/items/{item_id}")
    @limiter.limit("2/minute")
    async def item(request: Request, item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    app.include_router(router, prefix="/api")

    @app.post("/chat")
    @limiter.limit("3/minute", per_method=True, methods=["POST"])
    async def chat(request: Request) -> dict[str, str]:
        return {"answer": "hi"}

    @app.get("/health")
    @limiter.exempt
    async def health(request: Request) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/other")
    async def other(request: Request) -> dict[str, str]:
        return {"other": "yes"}

    app.add_middleware(SlowAPIMiddleware)
    return app


async def statuses(app: FastAPI, method: str, path: str, n: int) -> list[int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return [(await client.request(method, path)).status_code for _ in range(n)]


async def test_decorated_limits_are_enforced_per_route_template() -> None:
    app = slowapi_app()
    assert await statuses(app, "GET", "/api/items/1", 3) == [200, 200, 429]
    assert await statuses(app, "POST", "/chat", 4) == [200, 200, 200, 429]


async def test_default_limits_and_exemptions_carry_over() -> None:
    app = slowapi_app(default_limits=["2/minute"])
    assert await statuses(app, "GET", "/other", 3) == [200, 200, 429]
    assert await statuses(app, "GET", "/health", 5) == [200] * 5


async def test_headers_enabled_adds_the_legacy_fields_and_slowapi_stops_checking() -> None:
    app = slowapi_app(headers_enabled=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/api/items/1")
    assert response.headers["x-ratelimit-limit"] == "2"
    assert response.headers["x-ratelimit-remaining"] == "1"
    assert response.headers["ratelimit"].startswith('"/api/items/{item_id}";r=1;')
    assert app.state.limiter.enabled is False  # one limiter, not two


async def test_the_limiters_redis_storage_is_used_through_the_async_backend(
    redis_server: RedisServer, redis_url: str
) -> None:
    """slowapi's storage_uri now reaches Redis through the toolkit's async client: a stalled
    Redis no longer stalls the whole process, the request fails open within the timeout."""
    app = slowapi_app(storage_uri=redis_url)
    assert await statuses(app, "GET", "/api/items/1", 3) == [200, 200, 429]
    redis_server.pause(1.0)
    started = time.monotonic()
    assert await statuses(app, "GET", "/api/items/2", 1) == [200]
    assert time.monotonic() - started < 0.5


async def test_unsupported_slowapi_options_fail_at_startup_naming_the_route() -> None:
    limiter = Limiter(key_func=get_remote_address)
    app = FastAPI()
    app.state.limiter = limiter

    @app.get("/dynamic")
    @limiter.limit(lambda: "5/minute")
    async def dynamic(request: Request) -> dict[str, str]:
        return {}

    app.add_middleware(SlowAPIMiddleware)
    transport = httpx.ASGITransport(app=app)
    with pytest.raises(ConfigurationError, match="route /dynamic"):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/dynamic")
