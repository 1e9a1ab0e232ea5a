"""A small agent server: chat with a simulated model, session history, a health check.

    uvicorn examples.quickstart.app:app                        # without the toolkit
    QUICKSTART_TOOLKIT=1 uvicorn examples.quickstart.app:app   # with it

Runs offline: the "model" is a scripted one (a seeded random delay, an answer from the
documents it is given, and the tokens it counted), the "vector store" a word match over a few
documents that fails now and then, and the agent takes a while to build. Callers authenticate
with any non-empty ``X-API-Key``. ``QUICKSTART_OUTAGE=START-END`` takes the vector store down
from START to END seconds after the first chat (it hangs, as an unreachable host does).
With the toolkit, ``QUICKSTART_STATUS_TOKEN`` (16 characters or more) is a read-only admin
token, for the status page at ``/_toolkit/status`` and its JSON at ``/_toolkit/stats``.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

import toolkit

# A model provider serves each deployment a fixed number of concurrent calls: while one caller
# keeps many requests in flight, everybody else waits here.
MODEL_SLOTS = 6
MODEL, PROVIDER = "quickstart-model", "quickstart"  # what the scripted model calls itself
# USD per million tokens, the list price of a mid-sized hosted model: for the cost figures.
MODEL_PRICE = {"input": 3.0, "output": 15.0}
INSTRUCTIONS = (
    "You are the support agent of an online shop. Answer the customer's question from the "
    "documents below, in one or two sentences; when none of them applies, say so and ask the "
    "customer to rephrase."
)
RNG = random.Random(int(os.environ.get("QUICKSTART_SEED", "7")))
DOCUMENTS = {
    "refunds": "Refunds are issued within 5 business days to the original payment method.",
    "shipping": "Orders ship within 24 hours; tracking links arrive by email.",
    "passwords": "Reset a password from the sign-in page; links expire after 30 minutes.",
    "invoices": "Invoices are available under Billing and can be exported as PDF.",
}


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=4000)
    session_id: str = Field(min_length=1, max_length=128)


class ChatReply(BaseModel):
    session_id: str
    reply: str
    sources: list[str]


class Turn(BaseModel):
    role: str
    content: str


app = FastAPI(title="quickstart agent")
model_slots = asyncio.Semaphore(MODEL_SLOTS)
# (api key, session id) -> turns: a caller sees only its own sessions.
sessions: defaultdict[tuple[str, str], list[Turn]] = defaultdict(list)


def api_key(x_api_key: Annotated[str, Header()] = "") -> str:
    if not x_api_key.strip():
        raise HTTPException(401, "send an X-API-Key header", {"WWW-Authenticate": "ApiKey"})
    return x_api_key


class VectorStoreError(ConnectionError):
    """The vector store dropped the connection."""


def _outage(spec: str) -> tuple[float, float] | None:
    if not spec:
        return None
    start, _, end = spec.partition("-")
    return float(start), float(end)


OUTAGE = _outage(os.environ.get("QUICKSTART_OUTAGE", ""))
VECTOR_STORE_ERROR_RATE = 0.05  # connections reset now and then, as on any busy network
VECTOR_STORE_TIMEOUT = 2.0  # the client's own timeout, a common default
first_chat_at: float | None = None


async def retrieve(query: str) -> list[str]:
    """The documents that share a word with ``query``: a vector store round trip."""
    async with asyncio.timeout(VECTOR_STORE_TIMEOUT):
        since_first_chat = time.monotonic() - (first_chat_at or time.monotonic())
        if OUTAGE and OUTAGE[0] <= since_first_chat < OUTAGE[1]:
            await asyncio.sleep(VECTOR_STORE_TIMEOUT * 2)  # the host does not answer
        await asyncio.sleep(0.002)
        if RNG.random() < VECTOR_STORE_ERROR_RATE:
            raise VectorStoreError("connection reset by peer")
    words = _words(query)
    return [name for name, text in DOCUMENTS.items() if words & _words(text)][:2]


def _words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z]+", text.lower()) if len(word) > 3}


@dataclass(frozen=True)
class Completion:
    """The model API's answer: its text and the tokens it counted, as a provider reports them."""

    text: str
    input_tokens: int
    output_tokens: int


def count_tokens(text: str) -> int:
    """Tokens as the scripted model counts them: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


async def complete(question: str, documents: list[str]) -> Completion:
    """The model API: the instructions, the documents and the question in, an answer out. The
    scripted model repeats the documents, or asks again when it has none."""
    async with model_slots:
        await asyncio.sleep(RNG.uniform(0.040, 0.120))
    text = " ".join(documents) or f"I have no document about {question[:40]!r}; could you rephrase?"
    prompt = [INSTRUCTIONS, *documents, question]
    return Completion(text, sum(map(count_tokens, prompt)), count_tokens(text))


async def call_model(prompt: str, sources: list[str]) -> str:
    completion = await complete(prompt, [DOCUMENTS[name] for name in sources])
    return completion.text


class SupportAgent:
    """Stands for a pydantic-ai Agent: its tools, prompts and model client take a while to
    set up, and once built it is safe to share between requests."""

    async def run(self, message: str, session_id: str) -> tuple[str, list[str]]:
        """The reply to ``message`` and its sources; ``session_id`` is the chat the run
        belongs to (its conversation, when traced)."""
        sources = await retrieve(message)
        return await call_model(message, sources), sources


async def build_agent() -> SupportAgent:
    await asyncio.sleep(0.05)  # loading tools and prompt templates, opening the model client
    return SupportAgent()


async def answer(message: str, session_id: str) -> tuple[str, list[str]]:
    """A chat's reply and its sources, from an agent built for this chat alone."""
    return await (await build_agent()).run(message, session_id)


@app.post("/chat")
async def chat(request: ChatRequest, key: Annotated[str, Depends(api_key)]) -> ChatReply:
    global first_chat_at
    first_chat_at = first_chat_at or time.monotonic()
    history = sessions[key, request.session_id]
    try:
        reply, sources = await answer(request.message, request.session_id)
    except (VectorStoreError, TimeoutError) as error:
        raise HTTPException(503, "document search is unavailable; try again") from error
    history += [Turn(role="user", content=request.message), Turn(role="agent", content=reply)]
    return ChatReply(session_id=request.session_id, reply=reply, sources=sources)


@app.get("/sessions/{session_id}/history")
async def session_history(session_id: str, key: Annotated[str, Depends(api_key)]) -> list[Turn]:
    if (key, session_id) not in sessions:
        raise HTTPException(404, f"no session {session_id!r}")
    return sessions[key, session_id]


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


if os.environ.get("QUICKSTART_TOOLKIT", "0").lower() in ("1", "true", "yes", "on"):
    # The whole integration. Per API key, 60 requests a minute on any route and 5 a second
    # on /chat, the route that spends model calls. Breakers judge the last half second and
    # probe again after half a second: the vector store answers in milliseconds, and the demo
    # is short. The model's price gives each call its cost; a read-only admin token, when
    # given, opens the status page (the demo makes one per server).
    status_token = os.environ.get("QUICKSTART_STATUS_TOKEN")
    settings = toolkit.ToolkitSettings(
        ratelimit={"caller": "api_key", "limit": "60/minute", "routes": {"/chat": "5/second"}},
        resilience={"minimum_calls": 5, "window": "500ms", "open_duration": "500ms"},
        agents={"prices": {MODEL: MODEL_PRICE}},
        **({"admin": {"read_tokens": {"demo": status_token}}} if status_token else {}),
    )
    # One agent, built before the first request and shared by every chat; each run traced
    # (an invoke_agent span, its conversation the chat's session).
    agents = toolkit.AgentPool(build_agent, name="support-agent", mode="shared", size=64, warm=1)
    toolkit.install(app, settings, pools=[agents])
    answer = toolkit.traced_agent("support-agent", conversation="session_id")(
        toolkit.pooled(agents)(SupportAgent.run)  # the pool's agent comes in as self
    )

    # Each model call recorded: a chat span, its duration, its tokens and their cost.
    scripted_model = complete

    async def recorded_complete(question: str, documents: list[str]) -> Completion:
        async with toolkit.llm_call(MODEL, provider=PROVIDER) as call:
            completion = await scripted_model(question, documents)
            call.response(model=MODEL, finish_reasons=["stop"])
            call.usage(input_tokens=completion.input_tokens, output_tokens=completion.output_tokens)
        return completion

    complete = recorded_complete

    # The model's answer depends on the question and the documents only, never on who asks:
    # one call per distinct question for ten minutes, for every caller and every instance.
    # Each hit counts the model call and the tokens it spared (toolkit.cache.saved.*).
    call_model = toolkit.cached(ttl="10m", namespace="model")(call_model)

    async def no_sources(query: str) -> list[str]:
        return []  # the model answers without documents rather than not at all

    # Dropped connections are tried again; a store that stops answering costs 200 ms, then
    # nothing at all while its breaker is open. The whole search is a step of the agent run.
    retrieve = toolkit.step("retrieval")(
        toolkit.resilient(
            breaker="vector-store",
            retries=3,
            retry_on=VectorStoreError,
            timeout="200ms",
            fallback=no_sources,
        )(retrieve)
    )
