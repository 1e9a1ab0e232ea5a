"""A multi-agent chat: a privacy agent and a memory-retrieval agent read the user's message, a
conversation agent answers it, a memory manager keeps what it should remember.

    EXAMPLE_MODE=before uvicorn examples.multi_agent_chat.app:app   # without the toolkit
    EXAMPLE_MODE=after uvicorn examples.multi_agent_chat.app:app    # with it

Runs offline: the models are scripted (``examples._harness.ScriptedModel``: a seeded random
delay, a reply made from the prompt), served by one flaky provider: each call fails at
``MULTI_AGENT_CHAT_FAILURE_RATE`` (a 503, before any token) and hangs for ``STALL`` seconds
at ``MULTI_AGENT_CHAT_STALL_RATE`` (accepted, then nothing for a while). A second provider's
``backup-model`` is not flaky. Each session's memories are kept in this process, bounded.

``POST /chat`` takes ``{"message": ..., "session_id": ...}``. Without the toolkit it answers
JSON once everything is done: the privacy check, the retrieval, the memory manager's write and
the whole answer, one after another; a provider error is a 503. With it, it answers an SSE
stream (``text/event-stream``): a ``token`` event per chunk of the answer, then ``done``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

import toolkit
from examples._harness import (
    Completion,
    ProviderError,
    ScriptedEmbedder,
    ScriptedModel,
    after_mode,
    mount_call_counts,
    similarity,
    status_settings,
)

PROVIDER, BACKUP_PROVIDER = "chat-provider", "backup-provider"
FAILURE_RATE = float(os.environ.get("MULTI_AGENT_CHAT_FAILURE_RATE", "0.05"))
STALL_RATE = float(os.environ.get("MULTI_AGENT_CHAT_STALL_RATE", "0.03"))
STALL = 2.5  # seconds a hanging call sits before it answers
TOKEN_INTERVAL = 0.012  # seconds between two chunks of a streamed answer
MEMORIES_PER_SESSION = 32
MAX_SESSIONS = 10_000
PERSONAL = re.compile(r"[\w.+-]+@[\w-]+\.\w+|\+?\d[\d ().-]{6,}\d")  # an email, a phone number
CHAT_INSTRUCTIONS = "You are a friendly assistant. Answer in a few sentences, using the memories."


def classify(prompt: str) -> str:
    """The guard model's reply: whether the message (the prompt's last line) is personal."""
    return "personal" if PERSONAL.search(prompt.splitlines()[-1]) else "clear"


def answer_text(prompt: str) -> str:
    """The chat model's reply: it acknowledges the message and repeats what it remembers."""
    *context, message = prompt.splitlines()
    memories = [line.removeprefix("memory: ") for line in context if line.startswith("memory: ")]
    recalled = f" Earlier you told me: {'; '.join(memories)}." if memories else ""
    return f"Thanks for telling me that you said {message[:80]!r}.{recalled} What next?"


def extract(prompt: str) -> str:
    """The memory model's reply: the fact worth keeping from the message."""
    return prompt.splitlines()[-1][:120]


guard_model = ScriptedModel(
    "guard-model", latency=(0.040, 0.080), slots=64, error_rate=FAILURE_RATE, seed=1, reply=classify
)
chat_model = ScriptedModel(  # its latency is the time to the first token
    "chat-model",
    latency=(0.080, 0.140),
    slots=64,
    error_rate=FAILURE_RATE,
    seed=2,
    reply=answer_text,
)
memory_model = ScriptedModel(
    "memory-model", latency=(0.100, 0.180), slots=64, error_rate=FAILURE_RATE, seed=3, reply=extract
)
backup_model = ScriptedModel(
    "backup-model", latency=(0.050, 0.090), slots=64, seed=4, reply=answer_text
)
embedder = ScriptedEmbedder(
    "embed-model", latency=(0.015, 0.030), slots=64, error_rate=FAILURE_RATE
)
stalls = random.Random(int(os.environ.get("MULTI_AGENT_CHAT_SEED", "5")))


async def call_provider(model: ScriptedModel, prompt: str) -> Completion:
    """One call to the flaky provider (the backup provider never hangs)."""
    if model is not backup_model and stalls.random() < STALL_RATE:
        await asyncio.sleep(STALL)
    return await model.complete(prompt)


async def ask(model: ScriptedModel, prompt: str) -> Completion:
    """A model's whole answer."""
    return await call_provider(model, prompt)


async def stream(model: ScriptedModel, prompt: str) -> AsyncIterator[str]:
    """A streamed answer: the first chunk after the model's latency, then one every
    ``TOKEN_INTERVAL``. The provider fails before the first chunk, never after."""
    completion = await call_provider(model, prompt)
    for number, chunk in enumerate(re.findall(r"\S+\s*", completion.text)):
        if number:
            await asyncio.sleep(TOKEN_INTERVAL)
        yield chunk


@dataclass(frozen=True)
class Verdict:
    """The privacy agent's verdict: whether the message holds personal data (then it is not
    remembered), and the text the other agents may read."""

    personal: bool
    text: str


def redact(message: str) -> str:
    return PERSONAL.sub("[redacted]", message)


# Each session's memories (text and embedding), newest last; bounded in sessions and memories.
memories: OrderedDict[str, deque[tuple[str, list[float]]]] = OrderedDict()


def session_memories(session_id: str) -> deque[tuple[str, list[float]]]:
    found = memories.get(session_id)
    if found is None:
        found = memories[session_id] = deque(maxlen=MEMORIES_PER_SESSION)
        if len(memories) > MAX_SESSIONS:
            memories.popitem(last=False)
    memories.move_to_end(session_id)
    return found


async def check_privacy(message: str) -> Verdict:
    """The privacy agent: the guard model says whether the message is personal."""
    completion = await ask(guard_model, f"Is this message personal?\n{message}")
    personal = completion.text == "personal"
    return Verdict(personal, redact(message) if personal else message)


async def retrieve_memories(session_id: str, message: str) -> list[str]:
    """The retrieval agent: the session's three memories nearest to the message."""
    query = await embedder.embed(message)
    await asyncio.sleep(0.010)  # the vector store's round trip
    ranked = sorted(session_memories(session_id), key=lambda m: -similarity(query, m[1]))
    return [text for text, _ in ranked[:3]]


def converse(message: str, recalled: list[str]) -> AsyncIterator[str]:
    """The conversation agent: the chat model's streamed answer."""
    lines = [CHAT_INSTRUCTIONS, *(f"memory: {text}" for text in recalled), message]
    return stream(chat_model, "\n".join(lines))


async def manage_memory(session_id: str, message: str, personal: bool) -> None:
    """The memory manager: the memory model extracts what to keep, which is embedded and
    stored in the session's memories; nothing is kept from a personal message."""
    if personal:
        return
    fact = (await ask(memory_model, f"What is worth remembering?\n{message}")).text
    session_memories(session_id).append((fact, await embedder.embed(fact)))


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=4000)
    session_id: str = Field(min_length=1, max_length=128)


async def chat_sequentially(request: ChatRequest) -> Response:
    """Each agent after the other, the memory write before the answer; the whole answer is
    collected, then sent."""
    try:
        verdict = await check_privacy(request.message)
        recalled = await retrieve_memories(request.session_id, request.message)
        await manage_memory(request.session_id, request.message, verdict.personal)
        reply = "".join([chunk async for chunk in converse(verdict.text, recalled)])
    except ProviderError:
        return JSONResponse({"detail": "the model provider failed; try again"}, status_code=503)
    return JSONResponse({"reply": reply, "memories": recalled, "personal": verdict.personal})


app = FastAPI(title="multi-agent chat")
handle_chat = chat_sequentially


@app.post("/chat")
async def chat(request: ChatRequest) -> Response:
    return await handle_chat(request)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


mount_call_counts(
    app,
    {
        "guard-model": guard_model,
        "chat-model": chat_model,
        "memory-model": memory_model,
        "backup-model": backup_model,
        "embed-model": embedder,
    },
)


def event(name: str, data: object) -> str:
    """One server-sent event."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


if after_mode():
    toolkit.install(app, toolkit.ToolkitSettings(**status_settings()))

    # Each model call recorded (toolkit.llm_call): a span, its duration and tokens; a streamed
    # answer also its time to first chunk.
    plain_ask, plain_stream = ask, stream

    async def recorded_ask(model: ScriptedModel, prompt: str) -> Completion:
        provider = BACKUP_PROVIDER if model is backup_model else PROVIDER
        async with toolkit.llm_call(model.name, provider=provider) as call:
            completion = await plain_ask(model, prompt)
            call.usage(input_tokens=completion.input_tokens, output_tokens=completion.output_tokens)
        return completion

    async def recorded_stream(model: ScriptedModel, prompt: str) -> AsyncIterator[str]:
        provider = BACKUP_PROVIDER if model is backup_model else PROVIDER
        async with toolkit.llm_call(model.name, provider=provider, stream=True) as call:
            async for chunk in call.stream(plain_stream(model, prompt)):
                yield chunk

    ask, stream = recorded_ask, recorded_stream

    # Provider errors are tried again, twice, after a short wait; a call that hangs is cut
    # by its timeout; whatever still fails gets the agent's fallback. The conversation
    # agent's stream is retried until its first chunk, never after (the client has it).
    def retry_provider_errors() -> toolkit.RetryPolicy:
        return toolkit.RetryPolicy(
            on=ProviderError, attempts=3, wait_initial="20ms", wait_jitter="20ms"
        )

    async def local_privacy_check(message: str) -> Verdict:
        # Without the guard model, a rule: personal if it looks so, and never remembered.
        return Verdict(True, redact(message))

    async def no_memories(session_id: str, message: str) -> list[str]:
        return []

    async def backup_answer(message: str, recalled: list[str]) -> AsyncIterator[str]:
        lines = [CHAT_INSTRUCTIONS, *(f"memory: {text}" for text in recalled), message]
        async for chunk in stream(backup_model, "\n".join(lines)):
            yield chunk

    privacy_agent = toolkit.traced_agent("privacy")(
        toolkit.resilient(
            breaker="privacy",
            retries=retry_provider_errors(),
            timeout="400ms",
            fallback=local_privacy_check,
        )(check_privacy)
    )
    retrieval_agent = toolkit.traced_agent("retrieval", conversation="session_id")(
        toolkit.resilient(
            breaker="retrieval",
            retries=retry_provider_errors(),
            timeout="400ms",
            fallback=no_memories,
        )(toolkit.step("memory.search")(retrieve_memories))
    )

    # timeout= bounds a stream's time to its first chunk.
    @toolkit.traced_agent("conversation")
    @toolkit.resilient(
        breaker="conversation",
        retries=retry_provider_errors(),
        timeout="600ms",
        fallback=backup_answer,
    )
    async def conversation_agent(message: str, recalled: list[str]) -> AsyncIterator[str]:
        async for chunk in converse(message, recalled):
            yield chunk

    # The memory manager runs after the answer, off the request: retried on provider
    # errors, drained at shutdown.
    memory_agent = toolkit.background(retries=3, name="memory.manage")(
        toolkit.traced_agent("memory-manager", conversation="session_id")(manage_memory)
    )

    async def chat_pipelined(request: ChatRequest) -> Response:
        """The privacy and retrieval agents side by side, then the answer streamed as it comes;
        the memory manager deferred past the answer."""
        found = await toolkit.gather(
            toolkit.branch("privacy", privacy_agent, request.message, fallback=local_privacy_check),
            toolkit.branch(
                "retrieval", retrieval_agent, request.session_id, request.message, fallback=[]
            ),
            name="chat.inputs",
            deadline="1s",
        )
        privacy, retrieval = found["privacy"], found["retrieval"]
        # Both answer, through their own fallbacks if need be; with the pipelines.gather flag
        # off (no fan-out fallbacks), a branch that failed anyway gets the same answers here.
        verdict: Verdict = (
            privacy.value if privacy.answered else await local_privacy_check(request.message)
        )
        recalled: list[str] = retrieval.value if retrieval.answered else []

        async def events() -> AsyncIterator[str]:
            try:
                async for chunk in conversation_agent(verdict.text, recalled):
                    yield event("token", {"text": chunk})
            except ProviderError:  # after the first chunk: too late for a retry
                yield event("error", {"detail": "the model provider failed; try again"})
                return
            # A full queue or a shutdown refuses the memory write (the toolkit counts it);
            # the answer stands.
            with contextlib.suppress(toolkit.DeferRefused):
                await memory_agent.defer(request.session_id, request.message, verdict.personal)
            yield event("done", {"memories": recalled, "personal": verdict.personal})

        return StreamingResponse(events(), media_type="text/event-stream")

    handle_chat = chat_pipelined
