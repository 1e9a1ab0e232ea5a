"""A server whose cached routes misbehave on request, for the response cache's process tests.

Run as ``uvicorn tests.apps.response_cache:app``; the test sets the environment.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import toolkit
from toolkit.cache import cached_response

app = FastAPI()
released = asyncio.Event()


@app.get("/health")
async def health() -> dict[str, object]:
    return {"status": "ok", "worker": os.getpid()}


@app.post("/release")
async def release() -> dict[str, bool]:
    """Lets the streams held in this process end."""
    released.set()
    return {"released": True}


@app.get("/stream/{name}")
@cached_response(ttl="1m")
async def stream(name: str, request: Request) -> StreamingResponse:
    """``STREAM_BYTES`` bytes in 64 KiB chunks, then ``end``. With an ``x-hold`` header (not
    part of the key), it holds before ``end`` until ``POST /release``."""
    size = int(os.environ.get("STREAM_BYTES", "4096"))
    hold = "x-hold" in request.headers
    run = uuid.uuid4().hex

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, size, 65536):
            yield b"x" * min(65536, size - start)
        if hold:
            await released.wait()
        yield b"end"

    return StreamingResponse(chunks(), headers={"x-run": run, "x-worker": str(os.getpid())})


@app.get("/public/{name}")
@cached_response(ttl="1m", public=True)
async def public(name: str) -> dict[str, object]:
    """Stands for an LLM answer on a public page: takes ANSWER_SECONDS."""
    await asyncio.sleep(float(os.environ.get("ANSWER_SECONDS", "0")))
    return {"name": name, "run": uuid.uuid4().hex, "worker": os.getpid()}


class CsrfCookie:
    """Sets a ``csrftoken`` cookie on the response to any request under ``/public`` that has
    none, as CSRF middlewares do. Added before install(), so it sits inside the cache."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cookies = b"; ".join(v for n, v in scope.get("headers", ()) if n == b"cookie")
        if not scope.get("path", "").startswith("/public") or b"csrftoken=" in cookies:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = (b"set-cookie", b"csrftoken=" + uuid.uuid4().hex.encode() + b"; Path=/")
                message["headers"] = [*message.get("headers", ()), cookie]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


app.add_middleware(CsrfCookie)
installed = toolkit.install(app)
