"""A server with a slow ``@cached`` helper, for the cross-process single-flight test.

Run as ``uvicorn tests.apps.function_cache:app`` with TOOLKIT_BACKEND__URL (Redis),
TOOLKIT_CACHE__LEASE, FUNCTION_SECONDS and RUNS_KEY set; every run of the helper increments
RUNS_KEY in that Redis, so the test can tell how many ran across all processes.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis
from fastapi import FastAPI

import toolkit

app = FastAPI()
installed = toolkit.install(app)  # its cache store is the one the decorators use
counter = aioredis.Redis.from_url(installed.settings.backend.url)


@toolkit.cached(ttl="1m", namespace="agent")
async def classify(query: str) -> dict[str, object]:
    """Stands for an LLM call slower than the single-flight lease."""
    await counter.incr(os.environ["RUNS_KEY"])
    await asyncio.sleep(float(os.environ.get("FUNCTION_SECONDS", "1.5")))
    return {"intent": f"intent of {query}", "computed_by": os.getpid()}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/classify")
async def classify_route(q: str) -> dict[str, object]:
    return {"result": await classify(q), "served_by": os.getpid()}
