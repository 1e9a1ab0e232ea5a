"""A memory service shaped like issue 11's: retrieval cached per profile, a new memory
invalidating that profile's retrieval cache, for the cross-process tests.

Run as ``uvicorn tests.apps.profile_memory:app`` with TOOLKIT_BACKEND__URL (Redis) and
DATA_KEY set. A profile's memories live in that Redis (``{DATA_KEY}:memories:{profile}``),
as a memory store would keep them; each retrieval run increments ``{DATA_KEY}:runs`` and then
takes ``{DATA_KEY}:delay`` seconds (an embedding and a vector search), so that the test can
hold one in flight.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

import toolkit

app = FastAPI()
installed = toolkit.install(app)
data = aioredis.Redis.from_url(installed.settings.backend.url, decode_responses=True)
KEY = os.environ.get("DATA_KEY", "profile-memory-test")


async def memories_of(profile_id: str) -> list[str]:
    """Read first, then as slow as the test says: what a retrieval returns is what it read."""
    memories = await data.lrange(f"{KEY}:memories:{profile_id}", 0, -1)
    await data.incr(f"{KEY}:runs")
    await asyncio.sleep(float(await data.get(f"{KEY}:delay") or 0))
    return memories


@toolkit.cached(
    ttl="10m", namespace="memory", tags=lambda profile_id, **_: [f"profile:{profile_id}"]
)
async def retrieve(profile_id: str, *, query: str, k: int = 3) -> dict[str, object]:
    return {"memories": (await memories_of(profile_id))[-k:], "query": query}


@toolkit.cached(
    ttl="10m", namespace="memory", tags=lambda profile_id, **_: [f"profile:{profile_id}"]
)
async def recall(profile_id: str, *, query: str) -> AsyncIterator[str]:
    """The same retrieval, streamed one memory per server-sent event."""
    for memory in await memories_of(profile_id):
        yield f"data: {memory}\n\n"


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/profiles/{profile_id}/search")
async def search(profile_id: str, q: str) -> dict[str, object]:
    return {"result": await retrieve(profile_id, query=q), "served_by": os.getpid()}


@app.get("/profiles/{profile_id}/recall")
async def recall_route(profile_id: str, q: str) -> StreamingResponse:
    return StreamingResponse(recall(profile_id, query=q), media_type="text/event-stream")


@app.post("/profiles/{profile_id}/memories")
async def add_memory(profile_id: str, text: str) -> dict[str, object]:
    """A new memory: stored, then the profile's retrieval cache invalidated on every
    instance."""
    count = await data.rpush(f"{KEY}:memories:{profile_id}", text)
    await toolkit.cache.invalidate(tags=[f"profile:{profile_id}"])
    return {"memories": count}
