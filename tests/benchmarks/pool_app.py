"""The example route of the pool throughput benchmark: an agent that costs 100 ms to build.

Run as ``uvicorn tests.benchmarks.pool_app:app``; ``tests/benchmarks/pool_throughput.py``
starts it. Set up as docs/pooling.md shows it: ``toolkit.install(app, pools=[agents])`` with its
default settings, and a route that gets its agent from ``@toolkit.pooled(agents)``. The
agent answers at once (a stub model), so what is measured is the building, not the model.

``BENCH_POOL_BUILD`` says what the 100 ms are:

* ``io`` (default): awaited, the event loop free meanwhile (a remote session to open, a
  sandbox to start, a handshake);
* ``cpu``: spent on the event loop (configuration parsed, tool schemas generated).

The ``pool`` flag turns pooling off (``TOOLKIT_FLAGS__DEFAULTS='{"pool": "off"}'``): every
request then builds its own agent and closes it, the path before pooling. ``GET /health``
says which build, which flag variant, and how many agents were built so far.
"""

from __future__ import annotations

import asyncio
import os
import time

from fastapi import FastAPI

import toolkit
from toolkit.flags import POOL

BUILD_SECONDS = 0.1
BUILD = os.environ.get("BENCH_POOL_BUILD", "io")
if BUILD not in ("io", "cpu"):
    raise RuntimeError(f"BENCH_POOL_BUILD={BUILD!r}; choose io or cpu")

built = 0


class Agent:
    """Stands for an agent with its clients: expensive to build, quick to answer."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, prompt: str) -> str:
        self.runs += 1
        return f"echo: {prompt}"

    async def aclose(self) -> None: ...


async def make_agent() -> Agent:
    global built
    if BUILD == "io":
        await asyncio.sleep(BUILD_SECONDS)
    else:
        until = time.perf_counter() + BUILD_SECONDS
        while time.perf_counter() < until:
            pass
    built += 1
    return Agent()


agents = toolkit.AgentPool(make_agent, name="bench-agent", size=8, warm=8)
app = FastAPI()
installed = toolkit.install(app, pools=[agents])


@app.get("/agent")
@toolkit.pooled(agents)
async def answer(agent: Agent, prompt: str = "hello") -> dict[str, str]:
    return {"output": await agent.run(prompt)}


@app.get("/health")
async def health() -> dict[str, str | int]:
    return {"build": BUILD, "pool": installed.store.evaluate(POOL).variant, "built": built}
