"""An app whose deferred work is durable, and its task, for the worker-process tests.

Run as ``uvicorn tests.apps.durable:app`` with ``TOOLKIT_DEFER__DURABLE__*`` set, and its
workers as ``agent-toolkit worker tests.apps.durable``. The task records each run in the
queue's Redis: ``runs:<token>`` gets the worker's pid when a run starts, ``done:<token>``
when it ends, so a test sees which process ran it and how often.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis
from fastapi import FastAPI

import toolkit

app = FastAPI()


@toolkit.background(name="tests.durable.slow", retries=0)
async def slow_write(token: str, seconds: float) -> None:
    async with aioredis.from_url(os.environ["TOOLKIT_DEFER__DURABLE__URL"]) as client:
        await client.rpush(f"runs:{token}", os.getpid())
        await asyncio.sleep(seconds)
        await client.rpush(f"done:{token}", os.getpid())


@app.get("/health")
async def health() -> dict[str, object]:
    return {"status": "ok", "worker": os.getpid()}


@app.post("/defer/{token}")
async def defer(token: str, seconds: float = 0.0) -> dict[str, object]:
    handle = await slow_write.defer(token, seconds)
    return {"id": handle.id, "pid": os.getpid()}


toolkit.install(app)
