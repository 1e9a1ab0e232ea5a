"""An app that defers work, run by uvicorn in the deferred-work process tests.

``POST /stuck/{n}`` defers ``n`` tasks that never finish (a crash loses them);
``POST /write/{n}`` defers ``n`` tasks that each append a line to ``$DEFERRED_OUTPUT`` after a
short wait (a clean shutdown must run them all). Settings come from ``TOOLKIT_*``
(``TOOLKIT_DEFER__JOURNAL`` in the tests).
"""

from __future__ import annotations

import asyncio
import os

from fastapi import FastAPI

import toolkit

app = FastAPI()


@toolkit.background(name="crash.stuck")
async def stuck() -> None:
    await asyncio.Event().wait()


@toolkit.background(name="shutdown.write")
async def write(line: int) -> None:
    await asyncio.sleep(0.05)
    with open(os.environ["DEFERRED_OUTPUT"], "a") as output:  # noqa: ASYNC230 (a test app)
        output.write(f"{line}\n")


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/stuck/{count}")
async def defer_stuck(count: int) -> dict[str, int]:
    for _ in range(count):
        await stuck.defer()
    return {"deferred": count}


@app.post("/write/{count}")
async def defer_writes(count: int) -> dict[str, int]:
    for line in range(count):
        await write.defer(line)
    return {"deferred": count}


toolkit.install(app)
