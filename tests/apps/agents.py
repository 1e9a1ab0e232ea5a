"""Agent routes for process-level and dashboard tests, calling a real OpenAI-compatible
server (``tests/support/openai_server.py``) at ``OPENAI_BASE_URL``: agents with steps and
tools around model calls recorded by ``toolkit.llm_call`` (plain, streamed, embeddings,
failing, cached), an agent streaming through the OpenAI SDK plugin's instrumented client, a
pydantic-ai agent on the pydantic-ai plugin's ``ToolkitModel``, and a blocking call that
stalls the event loop.

``router`` is included by ``tests.apps.agent``; tests/plugins/test_dashboard_traces.py
includes it in an app of its own (installed on in-memory providers); it needs the plugins, as
every test of tests/plugins does. A test driving ``/agents/fail/status`` or
``/agents/fail/timeout`` scripts the server's next answer first (a 503; a stall).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import toolkit
from toolkit.agents import LLMCall
from toolkit_openai import instrument
from toolkit_pydantic_ai import ToolkitModel

router = APIRouter(prefix="/agents")

CHAT_MODEL = "gpt-4o"
EMBEDDING_MODEL = "text-embedding-3-small"
PROVIDER = "openai"
BLOCKING_SECONDS = 0.25
"""How long ``/agents/block`` holds the event loop: over the loop monitor's 100 ms."""
TIMEOUT_SECONDS = 0.2
"""The client's timeout on ``/agents/fail/timeout``; the test stalls the server longer."""


def client(base_url: str | None = None) -> openai.AsyncOpenAI:
    """A client of the local server (or of ``base_url``), the SDK's own retries off."""
    return _client(base_url or os.environ["OPENAI_BASE_URL"])


@functools.cache
def _client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)


def instrumented() -> openai.AsyncOpenAI:
    """A client of the local server recorded by the OpenAI SDK plugin (no llm_call here)."""
    return _instrumented(os.environ["OPENAI_BASE_URL"])


@functools.cache
def _instrumented(base_url: str) -> openai.AsyncOpenAI:
    return instrument(openai.AsyncOpenAI(base_url=base_url, api_key="test"), retries=None)


def planner() -> Agent[None, str]:
    """A pydantic-ai agent whose OpenAI model is wrapped by the plugin's ``ToolkitModel``."""
    return _planner(os.environ["OPENAI_BASE_URL"])


@functools.cache
def _planner(base_url: str) -> Agent[None, str]:
    model = OpenAIChatModel(CHAT_MODEL, provider=OpenAIProvider(openai_client=client(base_url)))
    return Agent(ToolkitModel(model), name="planner")


def _usage(call: LLMCall, usage: Any) -> None:
    if usage is not None:
        details = usage.prompt_tokens_details
        call.usage(
            input_tokens=usage.prompt_tokens,
            output_tokens=getattr(usage, "completion_tokens", None),
            cache_read_input_tokens=details.cached_tokens if details else None,
        )


@toolkit.step("memory.recall")
async def recall(question: str) -> list[str]:
    async with toolkit.llm_call(EMBEDDING_MODEL, provider=PROVIDER, operation="embeddings") as call:
        answer = await client().embeddings.create(model=EMBEDDING_MODEL, input=[question])
        call.response(model=answer.model)
        call.usage(input_tokens=answer.usage.prompt_tokens)
    return [f"a memory {len(answer.data[0].embedding)} numbers long"]


@toolkit.cached(ttl="1m", namespace="model-answers")
async def ask_model(question: str) -> str:
    """A model call a cache hit spares: its tokens and the call count as saved."""
    async with toolkit.llm_call(CHAT_MODEL, provider=PROVIDER) as call:
        answer = await client().chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": question}]
        )
        call.response(
            model=answer.model,
            finish_reasons=[choice.finish_reason for choice in answer.choices],
            response_id=answer.id,
        )
        _usage(call, answer.usage)
    return answer.choices[0].message.content or ""


@toolkit.traced_agent("support", conversation="session")
async def support(question: str, session: str) -> str:
    memories = await recall(question)
    async with toolkit.step("search", tool=True):
        found = [*memories, f"a document about {question}"]
    return f"{await ask_model(question)} ({len(found)} sources)"


@toolkit.traced_agent("writer")
async def writer(topic: str) -> AsyncIterator[str]:
    async with toolkit.llm_call(CHAT_MODEL, provider=PROVIDER, stream=True) as call:
        chunks = call.stream(
            await client().chat.completions.create(
                model=CHAT_MODEL,
                messages=[{"role": "user", "content": f"a short text about {topic}"}],
                stream=True,
                stream_options={"include_usage": True},
            ),
            on_chunk=lambda chunk: _usage(call, chunk.usage),
        )
    async for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


@toolkit.traced_agent("summarizer")
async def summarizer(topic: str) -> AsyncIterator[str]:
    """Streams through the plugin's client: the plugin measures the stream to its end."""
    chunks = await instrumented().chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": f"summarize {topic}"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


@toolkit.traced_agent("support")
async def failing(kind: str) -> str:
    """status: the server answers an error (the test scripts it); timeout: it stalls past the
    client's timeout (scripted too); connection: nothing listens where the client calls."""
    from tests.support.servers import free_port  # here: it imports pytest, which workers need not

    caller = client(f"http://127.0.0.1:{free_port()}/v1") if kind == "connection" else client()
    async with toolkit.llm_call(CHAT_MODEL, provider=PROVIDER):
        await caller.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": kind}],
            timeout=TIMEOUT_SECONDS,
        )
    return kind


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


@router.get("/summarize/{topic}")
async def summarize(topic: str) -> StreamingResponse:
    return StreamingResponse(summarizer(topic), media_type="text/plain")


@router.get("/plan/{question}")
async def plan(question: str) -> dict[str, str]:
    return {"plan": (await planner().run(question)).output}


@router.get("/fail/{kind}")
async def fail(kind: str) -> JSONResponse:
    try:
        await failing(kind)
    except (openai.APIError, ModelAPIError) as error:
        return JSONResponse({"error": type(error).__name__}, status_code=502)
    return JSONResponse({"error": None})


@router.get("/block/{note}")
async def block(note: str) -> dict[str, str]:
    return {"note": await archivist(note)}


PATHS = (
    "/agents/chat/why",
    "/agents/chat/why",  # a cache hit: the model call spared
    "/agents/stream/otel",
    "/agents/plan/tomorrow",
    "/agents/summarize/otel",
    "/agents/fail/status",
    "/agents/fail/timeout",
    "/agents/fail/connection",
    "/agents/block/n1",
)
"""One request of each kind, in an order every panel has data after (the server scripted
by :func:`script_failures` before the failing ones)."""


def script_failures(server: Any, path: str) -> None:
    """What the local server must answer ``path``'s model call, told before the request."""
    from tests.support.openai_server import Failure, Stall

    if path == "/agents/fail/status":
        server.script(Failure(503))
    elif path == "/agents/fail/timeout":
        server.script(Stall(TIMEOUT_SECONDS * 2))
