"""An agent-like server for process-level tests, configured through TOOLKIT_* variables.

Run as ``uvicorn tests.apps.agent:app``; the test sets the environment.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

import toolkit
from tests.apps.agents import router as agents
from toolkit.cache import cached_response

app = FastAPI()
app.include_router(agents)


@app.get("/health")
async def health() -> dict[str, object]:
    return {"status": "ok", "worker": os.getpid()}


@app.get("/limited")
async def limited() -> dict[str, int]:
    return {"worker": os.getpid()}


@app.get("/open")
async def fail_open() -> dict[str, str]:
    return {"answer": "open"}


@app.get("/closed")
async def fail_closed() -> dict[str, str]:
    return {"answer": "closed"}


@app.get("/loop")
async def loop_lag() -> dict[str, float]:
    """How late the event loop wakes a 10 ms sleep: blocking work shows up here."""
    started = time.perf_counter()
    await asyncio.sleep(0.01)
    return {"lag": time.perf_counter() - started - 0.01}


@toolkit.resilient(timeout=None)
async def token_events(chunks: int, delay: float) -> AsyncIterator[bytes]:
    """A model's token stream, through @resilient: its time to first chunk is measured."""
    for i in range(chunks):
        yield f"id: {i}\ndata: token {i} {'x' * (i % 7)}\n\n".encode()
        await asyncio.sleep(delay)


@app.get("/sse")
async def sse() -> StreamingResponse:
    chunks = int(os.environ.get("SSE_CHUNKS", "50"))
    delay = float(os.environ.get("SSE_DELAY", "0"))
    return StreamingResponse(token_events(chunks, delay), media_type="text/event-stream")


@app.get("/answers/{answer_id}")
@cached_response(ttl="1m", tags=["answers"])
async def answer(answer_id: str) -> dict[str, object]:
    """Stands for an LLM answer: takes ANSWER_SECONDS, and each run says it is a new one."""
    await asyncio.sleep(float(os.environ.get("ANSWER_SECONDS", "0")))
    return {"answer": answer_id, "run": uuid.uuid4().hex, "worker": os.getpid()}


@app.get("/flags/{key}")
async def flag(key: str, hold: float = 0) -> dict[str, object]:
    """This worker's answer for flag ``key``; with ``hold``, asked again after that many
    seconds within the same request."""
    first = toolkit.flags.evaluate(key)
    await asyncio.sleep(hold)
    store = installed.store
    return {
        "worker": os.getpid(),
        "variant": first.variant,
        "reason": first.reason,
        "again": toolkit.flags.variant(key),
        "loaded_at": store.loaded_at,
        "stale": store.stale,
    }


class Sandbox:
    """Stands for a per-run resource (a sandbox, an MCP session)."""

    async def aclose(self) -> None: ...


sandboxes = toolkit.AgentPool(Sandbox, name="sandbox", size=1, max_waiting=0, warm=1)
slow_sandboxes = toolkit.AgentPool(
    Sandbox, name="slow-sandbox", size=1, acquire_timeout="50ms", wait_threshold="10ms"
)


@app.get("/pooled/{scenario}")
async def pooled(scenario: str) -> dict[str, str]:
    """ok: borrow and give back; full: a second borrow while the only sandbox is lent (queue
    of 0: a 503 at once); timeout: the same on a pool that waits 50 ms (a 503); error: the
    block raises (the sandbox is closed, a 500)."""
    pool = slow_sandboxes if scenario == "timeout" else sandboxes
    async with pool.acquire():
        if scenario in ("full", "timeout"):
            async with pool.acquire():
                pass
        if scenario == "error":
            raise RuntimeError("the run failed")
    return {"scenario": scenario}


notes = sqlite3.connect(":memory:", check_same_thread=False)
notes.execute("create table notes (text text)")


@toolkit.offload(name="notes.save")
def save_note(text: str) -> int:
    """A synchronous sqlite3 write, run on the offload pool."""
    with notes:
        return notes.execute("insert into notes values (?)", (text,)).lastrowid or 0


@app.get("/offloaded")
async def offloaded() -> dict[str, int]:
    return {"row": await save_note("hi")}


class ProviderDown(Exception):
    """Stands for a model provider's 5xx."""


async def canned_reply(outcome: str) -> dict[str, str]:
    return {"reply": "canned"}


@toolkit.resilient(breaker="model", fallback=canned_reply, timeout=None)
async def call_model(outcome: str) -> dict[str, str]:
    if outcome == "fail":
        raise ProviderDown("the provider answered 503")
    return {"reply": "model"}


@app.get("/model/{outcome}")
async def model(outcome: str) -> dict[str, str]:
    """ok: the model answers; fail: it fails (enough failures open the "model" breaker, after
    which even ok calls get the canned reply until it probes again)."""
    return await call_model(outcome)


async def store_search(store: str, delay: float) -> list[str]:
    await asyncio.sleep(delay)
    return [f"{store} hit"]


@app.get("/fanout")
async def fanout() -> dict[str, object]:
    """Three stores side by side: one answers, one is cut at its deadline and falls back, one
    is cut with no fallback (the fan-out panels' outcomes)."""
    result = await toolkit.gather(
        toolkit.branch("vector", store_search, "vector", 0),
        toolkit.branch("graph", store_search, "graph", 5, deadline="20ms", fallback=[]),
        toolkit.branch("docs", store_search, "docs", 5, deadline="20ms"),
        name="memory.search",
    )
    return {"found": result.values(), "failed": list(result.failed)}


@app.get("/deadline")
async def past_its_deadline() -> dict[str, str]:
    """Slower than the budget a client asks with Request-Timeout: a 504."""
    await asyncio.sleep(5)
    return {"never": "answered"}


@toolkit.background(
    name="memory.extract", retries=toolkit.RetryPolicy(on=ProviderDown, attempts=2, wait_initial=0)
)
async def extract_memories(outcome: str) -> None:
    if outcome == "fail":
        raise ProviderDown("the extraction model answered 503")


@app.get("/deferred/{outcome}")
async def deferred(outcome: str) -> dict[str, str]:
    """ok: memory extraction deferred, and done after the answer; fail: it fails, is
    retried once and fails again."""
    handle = await extract_memories.defer(outcome)
    return {"task": handle.id}


installed = toolkit.install(app, pools=[sandboxes, slow_sandboxes])
