"""A server with slow ``@cached`` helpers, for the cross-process tests.

Run as ``uvicorn tests.apps.function_cache:app`` with TOOLKIT_BACKEND__URL (Redis),
TOOLKIT_CACHE__LEASE, FUNCTION_SECONDS and RUNS_KEY set; every run of the helper increments
RUNS_KEY in that Redis, so the test can tell how many ran across all processes. ``price``
reads an item's version from that Redis; ``POST /price/{item}`` changes it and invalidates
the item's tag, as an app updating its data would.
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


@toolkit.cached(ttl="1m", namespace="agent", tags=lambda item: [f"item:{item}"])
async def price(item: str) -> dict[str, object]:
    """Reads the data first, then takes as long as an LLM call."""
    version = int(await counter.get(f"{os.environ['RUNS_KEY']}:version:{item}") or 0)
    await counter.incr(f"{os.environ['RUNS_KEY']}:price-runs")
    await asyncio.sleep(float(os.environ.get("FUNCTION_SECONDS", "1.5")))
    return {"version": version}


@app.get("/price")
async def price_route(item: str) -> dict[str, object]:
    return {"result": await price(item), "served_by": os.getpid()}


@app.post("/price/{item}")
async def change_price(item: str) -> dict[str, object]:
    version = await counter.incr(f"{os.environ['RUNS_KEY']}:version:{item}")
    await toolkit.cache.invalidate(tags=[f"item:{item}"])
    return {"version": version}
