"""A server with a ``@resilient`` call to a dependency the test controls, for the breaker's
fleet tests.

Run as ``uvicorn tests.apps.breaker:app`` with TOOLKIT_BACKEND__URL (Redis), the
TOOLKIT_RESILIENCE__* settings of the test, and KEY_PREFIX. The dependency lives in that Redis,
or in DEPENDENCY_URL's when set (so a test can take the backend away and keep the dependency):
``<KEY_PREFIX>:mode`` says whether it fails (``fail``) or answers (anything else),
``<KEY_PREFIX>:delay`` how many seconds it takes, and each call that reaches it increments
``<KEY_PREFIX>:calls``, so the test can count the calls the whole fleet let through.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.responses import JSONResponse

import toolkit
from toolkit.resilience import current_breakers

BREAKER = "provider"
PREFIX = os.environ.get("KEY_PREFIX", "breaker-test")
CALLS_KEY, MODE_KEY, DELAY_KEY = f"{PREFIX}:calls", f"{PREFIX}:mode", f"{PREFIX}:delay"

app = FastAPI()
installed = toolkit.install(app)  # its breaker registry is the one @resilient uses
dependency = aioredis.Redis.from_url(
    os.environ.get("DEPENDENCY_URL") or installed.settings.backend.url
)


class ProviderDown(Exception):
    """The dependency failed (a 5xx of an LLM provider, say)."""


@toolkit.resilient(breaker=BREAKER)
async def call_provider() -> str:
    """Stands for an LLM call: counted, then as slow and as broken as the test says."""
    async with dependency.pipeline(transaction=False) as pipe:
        calls, mode, delay = await pipe.incr(CALLS_KEY).get(MODE_KEY).get(DELAY_KEY).execute()
    await asyncio.sleep(float(delay or 0))
    if mode == b"fail":
        raise ProviderDown(f"call {calls} failed")
    return f"answer {calls}"


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/call")
async def call() -> JSONResponse:
    """200 with the dependency's answer, 502 when it failed, 503 when the breaker refused."""
    pid = os.getpid()
    try:
        answer = await call_provider()
    except toolkit.CircuitOpenError as exc:
        body = {"outcome": "refused", "retry_after": exc.retry_after, "pid": pid}
        return JSONResponse(body, status_code=503)
    except ProviderDown:
        return JSONResponse({"outcome": "failed", "pid": pid}, status_code=502)
    return JSONResponse({"outcome": "answered", "answer": answer, "pid": pid})


@app.get("/breaker")
async def breaker() -> dict[str, object]:
    """This process's own view of the breaker, without making a call (nor creating it:
    ``unused`` until the first call)."""
    found = next((b for b in current_breakers() if b.name == BREAKER), None)
    if found is None:
        return {"state": "unused", "degraded": False, "pid": os.getpid()}
    return {"state": found.state, "degraded": found.degraded, "pid": os.getpid()}
