"""A layered memory service: per user, the context an agent needs for its next turn, from a
buffer of the user's recent messages and three memory layers, each read by a model call.

    EXAMPLE_MODE=before uvicorn examples.layered_memory.app:app   # without the toolkit
    EXAMPLE_MODE=after uvicorn examples.layered_memory.app:app    # with it

Runs offline: the model is a scripted one (``examples._harness.ScriptedModel``: a seeded random
delay per path, an answer made from the user's stored messages), the "database" a bounded dict
in this process. Each user's ``MemoryService`` (their profile, the index of their messages,
the store and model clients) takes ``BUILD_TIME`` to build. Without the toolkit, which layers
run and whether the buffer is used is fixed at startup (``LAYERED_MEMORY_LAYERS``,
``LAYERED_MEMORY_BUFFER``); with it, flags decide, per request. There,
``LAYERED_MEMORY_OPERATOR_TOKEN`` (16 characters or more) is an admin token that may change
flags (``/_toolkit/flags``), and ``EXAMPLE_STATUS_TOKEN`` a read-only one for the status page.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import OrderedDict, deque

from fastapi import FastAPI
from pydantic import BaseModel, Field

import toolkit
from examples._harness import (
    Completion,
    ScriptedModel,
    after_mode,
    mount_call_counts,
    status_settings,
)

MODEL, PROVIDER = "memory-model", "layered-memory"  # what the scripted model calls itself
BUILD_TIME = 0.2  # loading a user's profile and memory index, opening their store clients
# The layers, cheapest first, and how long each one's model call takes (seconds, uniform):
# a small model reads the layer's store and keeps what bears on the new message.
LAYERS = ("working", "episodic", "semantic")
LAYER_TIME = {"working": (0.010, 0.020), "episodic": (0.030, 0.050), "semantic": (0.060, 0.090)}
# The buffer path: the new message joins the user's recent messages, and a model call
# condenses them into the query the layers read.
BUFFER_TIME = (0.030, 0.050)
BUFFER_SIZE = 8  # recent messages in a user's buffer
HISTORY_SIZE = 64  # messages the database keeps per user
MAX_USERS = 10_000  # users the database keeps, the least recently seen dropped first
OPERATOR, OPERATOR_TOKEN_VARIABLE = "operator", "LAYERED_MEMORY_OPERATOR_TOKEN"
# Without the toolkit the configuration is fixed at startup: a layer switched off, or the
# buffer bypassed, takes a new deploy with another value of these variables.
STATIC_LAYERS = tuple(
    name for name in os.environ.get("LAYERED_MEMORY_LAYERS", ",".join(LAYERS)).split(",") if name
)
STATIC_BUFFER = os.environ.get("LAYERED_MEMORY_BUFFER", "on") == "on"


class RecallRequest(BaseModel):
    user_id: str = Field(min_length=1, max_length=128)
    message: str = Field(min_length=1, max_length=4000)


class Recall(BaseModel):
    """The context of one user's next turn: what each layer that ran found, and which path
    the message took."""

    user_id: str
    buffered: bool  # whether the buffer path condensed the query
    layers: list[str]  # the layers that ran, in order
    context: dict[str, list[str]]


# The database: each user's messages, newest last. Bounded in users and in messages.
database: OrderedDict[str, deque[str]] = OrderedDict()


def stored_messages(user_id: str) -> deque[str]:
    messages = database.get(user_id)
    if messages is None:
        messages = database[user_id] = deque(maxlen=HISTORY_SIZE)
        if len(database) > MAX_USERS:
            database.popitem(last=False)
    database.move_to_end(user_id)
    return messages


def _words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z]+", text.lower()) if len(word) > 3}


def related(prompt: str) -> str:
    """The scripted model's reply to ``task / query / candidates...``: the candidates (the last
    three) that share a word with the query, one a line."""
    _task, query, *candidates = prompt.split("\n")
    words = _words(query)
    return "\n".join([line for line in candidates if words & _words(line)][-3:])


# The same model, asked with a prompt of its own per path: a short one for the buffer and the
# working layer, the whole history for the semantic layer, hence their latencies.
models = {
    path: ScriptedModel(MODEL, latency=latency, slots=64, seed=seed, reply=related)
    for seed, (path, latency) in enumerate([("buffer", BUFFER_TIME), *LAYER_TIME.items()])
}


async def complete(path: str, query: str, candidates: list[str]) -> Completion:
    """One model call of ``path`` (the buffer or a layer)."""
    lines = [
        f"recall {path}",
        query.replace("\n", " "),
        *(c.replace("\n", " ") for c in candidates),
    ]
    return await models[path].complete("\n".join(lines))


async def condense(recent: list[str], message: str) -> str:
    """The buffer path's model call: the recent messages and the new one, condensed into
    the query the layers read."""
    completion = await complete("buffer", message, recent)
    return " ".join([*completion.text.splitlines(), message])


async def read_layer(layer: str, query: str, messages: list[str]) -> list[str]:
    """One layer's model call over the part of the user's messages that layer keeps."""
    return (await complete(layer, query, messages)).text.splitlines()


def buffer_enabled() -> bool:
    return STATIC_BUFFER


def layers_enabled() -> list[str]:
    return [name for name in LAYERS if name in STATIC_LAYERS]


class MemoryService:
    """One user's memory: built for that user (``BUILD_TIME``), then safe to share between
    that user's requests. Holds the user's buffer of recent messages."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.buffer: deque[str] = deque(maxlen=BUFFER_SIZE)

    def layer_messages(self, layer: str) -> list[str]:
        """What each layer keeps: the last few messages, the older ones, all of them."""
        messages = list(stored_messages(self.user_id))
        if layer == "working":
            return messages[-4:]
        if layer == "episodic":
            return messages[:-4]
        return messages

    async def recall(self, user_id: str, message: str) -> Recall:
        """The context for ``message``: through the buffer path unless it is bypassed, then
        each layer that is switched on, one after another. The message is stored afterwards."""
        buffered = buffer_enabled()
        query = message
        if buffered:
            query = await run_buffer(self, message)
        layers = layers_enabled()
        context = {layer: await run_layer(self, layer, query) for layer in layers}
        stored_messages(user_id).append(message)
        return Recall(user_id=user_id, buffered=buffered, layers=layers, context=context)


async def run_buffer(service: MemoryService, message: str) -> str:
    query = await condense(list(service.buffer), message)
    service.buffer.append(message)
    return query


async def run_layer(service: MemoryService, layer: str, query: str) -> list[str]:
    return await read_layer(layer, query, service.layer_messages(layer))


async def build_service(user_id: str) -> MemoryService:
    await asyncio.sleep(BUILD_TIME)
    return MemoryService(user_id)


async def recall(user_id: str, message: str) -> Recall:
    """The user's context, from a service built for this request alone: keeping one per
    user would grow without bound, and a stale one would keep serving an old profile."""
    return await (await build_service(user_id)).recall(user_id, message)


app = FastAPI(title="layered memory")


@app.post("/recall")
async def recall_route(request: RecallRequest) -> Recall:
    return await recall(request.user_id, request.message)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


mount_call_counts(app, models)  # GET /_demo/calls: the model calls of each path

if after_mode():
    # Flags: the buffer path and each layer can be switched off at run time, on every
    # instance, from the admin page, its API or `agent-toolkit flags set`. Each request reads
    # them once, at its start: a flip applies from the next request on.
    BUFFER_FLAG = "memory.buffer"
    LAYER_FLAGS = {layer: f"memory.layer.{layer}" for layer in LAYERS}
    toolkit.flags.declare(
        BUFFER_FLAG, default="on", description="condense recent messages before the layers"
    )
    for layer, key in LAYER_FLAGS.items():
        toolkit.flags.declare(key, default="on", description=f"read the {layer} memory layer")

    def buffer_enabled() -> bool:
        return toolkit.flags.is_enabled(BUFFER_FLAG)

    def layers_enabled() -> list[str]:
        return [layer for layer, key in LAYER_FLAGS.items() if toolkit.flags.is_enabled(key)]

    # The status page's read-only token (the demo's), and an operator's token that may
    # change flags, when given (the demo flips flags with it).
    admin = status_settings().get("admin", {})
    if len(operator_token := os.environ.get(OPERATOR_TOKEN_VARIABLE, "")) >= 16:
        admin["tokens"] = {OPERATOR: operator_token}
    settings = toolkit.ToolkitSettings(admin=admin)
    # One service per user, built on the user's first request and shared by their later
    # ones; at most 64 users' services are kept, the least recently used idle one closed
    # past that. A service is rebuilt after 30 minutes, so a changed profile is read again.
    # The key is the user: in a real server, the one its authentication names, never an id
    # a client may make up (each new key builds a service).
    services = toolkit.AgentPool(
        build_service, name="memory-service", mode="shared", max_keys=64, recycle_after="30m"
    )
    toolkit.install(app, settings, pools=[services])
    recall = toolkit.traced_agent("layered-memory", conversation="user_id")(
        toolkit.pooled(services, key=lambda user_id, message: user_id)(MemoryService.recall)
    )

    # A span per layer and one for the buffer path (toolkit.step), each model call recorded
    # under it (toolkit.llm_call).
    plain_buffer, plain_layer, scripted_model = run_buffer, run_layer, complete
    buffer_step = toolkit.step("memory.buffer")
    layer_steps = {layer: toolkit.step(f"memory.{layer}") for layer in LAYERS}

    async def traced_buffer(service: MemoryService, message: str) -> str:
        async with buffer_step:
            return await plain_buffer(service, message)

    async def traced_layer(service: MemoryService, layer: str, query: str) -> list[str]:
        async with layer_steps[layer]:
            return await plain_layer(service, layer, query)

    async def recorded_complete(path: str, query: str, candidates: list[str]) -> Completion:
        async with toolkit.llm_call(MODEL, provider=PROVIDER) as call:
            completion = await scripted_model(path, query, candidates)
            call.usage(input_tokens=completion.input_tokens, output_tokens=completion.output_tokens)
        return completion

    run_buffer, run_layer, complete = traced_buffer, traced_layer, recorded_complete
