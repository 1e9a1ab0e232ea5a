"""A small agent server: chat with a simulated model, session history, a health check.

    uvicorn examples.quickstart.app:app                        # without the toolkit
    QUICKSTART_TOOLKIT=1 uvicorn examples.quickstart.app:app   # with it

Runs offline: the "model" is a seeded random delay, the "retrieval" a word match over a few
documents. Callers authenticate with any non-empty ``X-API-Key``.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections import defaultdict
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

import toolkit

# A model provider serves each deployment a fixed number of concurrent calls: while one caller
# keeps many requests in flight, everybody else waits here.
MODEL_SLOTS = 6
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


async def retrieve(query: str) -> list[str]:
    await asyncio.sleep(0.002)  # a vector store round trip
    words = _words(query)
    return [name for name, text in DOCUMENTS.items() if words & _words(text)][:2]


def _words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z]+", text.lower()) if len(word) > 3}


async def call_model(prompt: str, sources: list[str]) -> str:
    async with model_slots:
        await asyncio.sleep(RNG.uniform(0.040, 0.120))
    context = " ".join(DOCUMENTS[name] for name in sources)
    return context or f"I have no document about {prompt[:40]!r}; could you rephrase?"


@app.post("/chat")
async def chat(request: ChatRequest, key: Annotated[str, Depends(api_key)]) -> ChatReply:
    history = sessions[key, request.session_id]
    sources = await retrieve(request.message)
    reply = await call_model(request.message, sources)
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
    # The whole integration: per API key, 60 requests a minute on any route and 5 a second
    # on /chat, the route that spends model calls. Everything else keeps its defaults.
    policy = {"key": "api_key", "limit": "60/minute", "routes": {"/chat": "5/second"}}
    toolkit.install(app, toolkit.ToolkitSettings(ratelimit=policy))
    # The model's answer depends on the question and the documents only, never on who asks:
    # one call per distinct question for ten minutes, for every caller and every instance.
    call_model = toolkit.cached(ttl="10m", namespace="model")(call_model)
