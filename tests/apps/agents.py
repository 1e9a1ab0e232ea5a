"""Agent routes for process-level and dashboard tests: agents with steps and tools, model
calls (plain, streamed, failing, cached), and a blocking call that stalls the event loop.

``router`` is included by ``tests.apps.agent``; a unit test includes it in an app of its own
(installed on in-memory providers). The model is ``canned``: this module's stand-in for a
provider, recorded through ``toolkit.llm_call`` as a client of one would be.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

import toolkit

router = APIRouter(prefix="/agents")

CHAT_MODEL = "gpt-4o"
EMBEDDING_MODEL = "text-embedding-3-small"
PROVIDER = "openai"
BLOCKING_SECONDS = 0.25
"""How long ``/agents/block`` holds the event loop: over the loop monitor's 100 ms."""


@toolkit.step("memory.recall")
async def recall(question: str) -> list[str]:
    with toolkit.llm_call(EMBEDDING_MODEL, provider=PROVIDER, operation="embeddings") as call:
        call.usage(input_tokens=len(question.split()))
    return [f"a memory about {question}"]


@toolkit.cached(ttl="1m", namespace="model-answers")
async def ask_model(question: str) -> str:
    """A model call a cache hit spares: its tokens and the call count as saved."""
    async with toolkit.llm_call(CHAT_MODEL, provider=PROVIDER) as call:
        call.response(model=f"{CHAT_MODEL}-2024-08-06", finish_reasons=["stop"])
        call.usage(input_tokens=120, output_tokens=30, cache_read_input_tokens=64)
    return f"the answer to {question}"


@toolkit.traced_agent("support", conversation="session")
async def support(question: str, session: str) -> str:
    memories = await recall(question)
    async with toolkit.step("search", tool=True):
        found = [*memories, f"a document about {question}"]
    return f"{await ask_model(question)} ({len(found)} sources)"


async def _chunks(text: str) -> AsyncIterator[str]:
    for word in text.split():
        yield f"{word} "


@toolkit.traced_agent("writer")
async def writer(topic: str) -> AsyncIterator[str]:
    async with toolkit.llm_call(CHAT_MODEL, provider=PROVIDER, stream=True) as call:
        call.usage(input_tokens=40, output_tokens=6)  # read when the stream ends
        call.response(model=CHAT_MODEL, finish_reasons=["stop"])
        chunks = call.stream(_chunks(f"a short text about {topic}"))
    async for chunk in chunks:
        yield chunk


@toolkit.traced_agent("support")
async def failing(kind: str) -> str:
    async with toolkit.llm_call(CHAT_MODEL, provider=PROVIDER):
        if kind == "timeout":
            raise TimeoutError("the provider did not answer in time")
        raise ConnectionError("the provider refused the connection")


@toolkit.traced_agent("archivist")
async def archivist(note: str) -> str:
    with toolkit.step("sqlite.write"):
        time.sleep(BLOCKING_SECONDS)  # noqa: ASYNC251 - the blocking call under test
    return note


@router.get("/chat/{question}")
async def chat(question: str, session: str = "s-1") -> dict[str, str]:
    return {"answer": await support(question, session=session)}


@router.get("/stream/{topic}")
async def stream(topic: str) -> StreamingResponse:
    return StreamingResponse(writer(topic), media_type="text/plain")


@router.get("/fail/{kind}")
async def fail(kind: str) -> JSONResponse:
    try:
        await failing(kind)
    except (TimeoutError, ConnectionError) as error:
        return JSONResponse({"error": type(error).__name__}, status_code=502)
    return JSONResponse({})


@router.get("/block/{note}")
async def block(note: str) -> dict[str, str]:
    return {"note": await archivist(note)}


PATHS = (
    "/agents/chat/why",
    "/agents/chat/why",  # a cache hit: the model call spared
    "/agents/stream/otel",
    "/agents/fail/timeout",
    "/agents/fail/connection",
    "/agents/block/n1",
)
"""One request of each kind, in an order every panel has data after."""
