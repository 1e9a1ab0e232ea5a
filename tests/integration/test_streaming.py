"""Server-sent events pass through telemetry and rate limiting byte for byte."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

import toolkit
from tests.support.asgi import call, http_scope
from tests.support.servers import UvicornServer

pytestmark = pytest.mark.anyio

CHUNKS = [f"id: {i}\ndata: token {i} {'x' * (i % 7)}\n\n".encode() for i in range(50)]


def sse_app(with_toolkit: bool) -> FastAPI:
    app = FastAPI()

    @app.get("/sse")
    async def sse() -> StreamingResponse:
        async def events():  # type: ignore[no-untyped-def]
            for chunk in CHUNKS:
                yield chunk

        return StreamingResponse(events(), media_type="text/event-stream")

    if with_toolkit:
        toolkit.install(app, toolkit.ToolkitSettings(ratelimit={"limit": "100/minute"}))
    return app


async def test_sse_through_the_whole_stack_keeps_every_message() -> None:
    """Same body messages in the same order as the bare app, one response start, and the
    rate-limit fields on it."""
    bare = await call(sse_app(False), http_scope("/sse"))
    stacked = await call(sse_app(True), http_scope("/sse"))
    starts = [m for m in stacked if m["type"] == "http.response.start"]
    assert len(starts) == 1
    assert any(name == b"ratelimit" for name, _ in starts[0]["headers"])
    body = [m for m in stacked if m["type"] == "http.response.body"]
    assert body == [m for m in bare if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in body) == b"".join(CHUNKS)


@pytest.mark.slow
def test_sse_over_real_http_is_byte_exact(redis_url: str) -> None:
    env = {
        "TOOLKIT_BACKEND__URL": redis_url,
        "TOOLKIT_RATELIMIT__ROUTES": json.dumps({"/sse": "100/minute"}),
        "SSE_CHUNKS": "50",
        "SSE_DELAY": "0.01",
    }
    with (
        UvicornServer("tests.apps.agent:app", env=env) as server,
        httpx.Client() as client,
        client.stream("GET", server.base_url + "/sse") as response,
    ):
        started = time.monotonic()
        received, arrivals = [], []
        for chunk in response.iter_raw():
            received.append(chunk)
            arrivals.append(time.monotonic() - started)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["ratelimit"].startswith('"/sse";r=99;')
    assert b"".join(received) == b"".join(CHUNKS)
    # It streamed: the first event arrived long before the last was produced (50 x 10 ms).
    assert arrivals[0] < arrivals[-1] / 2
