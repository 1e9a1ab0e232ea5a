"""Checked by mypy --strict (tests/unit/test_typing.py), never run: decorators keep types."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, assert_type

import toolkit
from toolkit.ratelimit.slowapi import SlowAPIMiddleware


async def old_answer(question: str, *, retries: int = 0) -> str:
    return question


@toolkit.feature("typing.answer-v2", fallback=old_answer)
async def new_answer(question: str, *, retries: int = 0) -> str:
    return question


async def use() -> None:
    assert_type(await new_answer("why?", retries=1), str)
    evaluation = toolkit.flags.evaluate("typing.answer-v2")
    assert_type(evaluation.variant, str)
    assert_type(toolkit.flags.is_enabled("typing.answer-v2", caller="user-1"), bool)


@toolkit.cached(ttl="10m", tags=["intent"], namespace="typing")
async def classify(query: str, *, locale: str = "en") -> dict[str, str]:
    return {"intent": query, "locale": locale}


class Retriever:
    @toolkit.cached(ttl=60, key=lambda self, query, k=3: [query, k], serializer="msgpack")
    async def search(self, query: str, k: int = 3) -> list[str]:
        return [query] * k


@toolkit.cached(ttl="1h", tags=lambda account, **_: [f"account:{account}"])
def plan(account: str, *, tier: int = 1) -> dict[str, int]:
    return {"tier": tier}


@toolkit.cached(ttl="10m", per_caller=True)
async def remember(question: str) -> list[str]:
    return [question]


@toolkit.cache_embeddings(model="text-embedding-3-small", ttl="30d")
async def embed(texts: list[str]) -> list[list[float]]:
    return [[float(len(text))] for text in texts]


class Embedder:
    @toolkit.cache_embeddings(model="local-minilm")
    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [[0.0] for _ in texts]


async def use_caches() -> None:
    assert_type(await classify("refund", locale="de"), dict[str, str])
    assert_type(await Retriever().search("refund", k=2), list[str])
    assert_type(plan("acme", tier=2), dict[str, int])
    assert_type(await remember("why?"), list[str])
    assert_type(await embed(["a", "b"]), list[list[float]])
    assert_type(await Embedder().embed(["a"]), list[list[float]])
    await classify(42)  # type: ignore[arg-type]
    plan(42)  # type: ignore[arg-type]
    plan("acme", tier="gold")  # type: ignore[arg-type]
    await embed("not a list")  # type: ignore[arg-type]


async def canned(prompt: str, *, temperature: float = 0.0) -> str:
    return "busy"


@toolkit.resilient(
    breaker="openai",
    retries=3,
    retry_on=toolkit.resilience.provider_errors,
    timeout="20s",
    fallback=canned,
)
async def call_llm(prompt: str, *, temperature: float = 0.0) -> str:
    return prompt


async def canned_chunks(prompt: str) -> AsyncIterator[str]:
    yield "busy"


@toolkit.resilient(retries=3, retry_on=toolkit.resilience.provider_errors, fallback=canned_chunks)
async def stream_llm(prompt: str) -> AsyncIterator[str]:
    yield prompt


@toolkit.cached(ttl="10m")
@toolkit.resilient(timeout="5s")
async def cached_stream(prompt: str, *, n: int = 1) -> AsyncIterator[str]:
    yield prompt


async def use_streams() -> None:
    assert_type(stream_llm("hi"), AsyncIterator[str])
    async for chunk in cached_stream("hi", n=2):
        assert_type(chunk, str)
    cached_stream(3)  # type: ignore[arg-type]


class Agent:
    async def run(self, question: str) -> str:
        return question


async def make_agent() -> Agent:
    return Agent()


agents = toolkit.AgentPool(make_agent, size=2)


@toolkit.pooled(agents)
async def ask(agent: Agent, question: str, *, model: str = "small") -> str:
    return await agent.run(question)


async def use_resilience_and_pools() -> None:
    assert_type(await call_llm("hi", temperature=0.2), str)
    assert_type(agents, toolkit.AgentPool[Agent])
    async with agents.acquire() as agent:
        assert_type(agent, Agent)
    assert_type(await ask("why?", model="large"), str)
    await call_llm(42)  # type: ignore[arg-type]
    await ask(Agent(), "why?")  # type: ignore[arg-type, call-arg]  # never pass the agent


async def app(scope: Any, receive: Any, send: Any) -> None: ...


def use_conventions() -> None:
    """The conventions of docs/api.md, as a type checker sees them."""
    assert_type(toolkit.DEFAULT, Literal[toolkit.Default.DEFAULT])
    store = toolkit.flags.current_store()
    limiter = toolkit.RateLimitMiddleware(
        app,
        limit=None,
        algorithm="sliding-window-counter",
        failure="closed",
        headers="both",
        proxy_header="forwarded",
        backend="memory://",
        flags=store,
    )
    assert_type(limiter, toolkit.RateLimitMiddleware)
    toolkit.RateLimitMiddleware(app, algorithm=toolkit.DEFAULT, caller=toolkit.DEFAULT)
    toolkit.RateLimitMiddleware(app, algorithm="token-bucket")  # type: ignore[arg-type]
    toolkit.RateLimitMiddleware(app, failure="sometimes")  # type: ignore[arg-type]
    toolkit.RateLimitMiddleware(app, headers="rfc")  # type: ignore[arg-type]
    toolkit.RateLimitMiddleware(app, algorithm=None)  # type: ignore[arg-type]
    SlowAPIMiddleware(app, algorithm="fixed-window", backend="memory://")
    SlowAPIMiddleware(app, headers="rfc")  # type: ignore[arg-type]
    toolkit.ResponseCacheMiddleware(app, cache=toolkit.cache.current_cache(), caller=None)
    toolkit.ResponseCacheMiddleware(app, backend="memory://", wait=toolkit.DEFAULT)
    toolkit.CircuitBreaker("typing", window=toolkit.DEFAULT, probes=2)
    toolkit.AgentPool(make_agent, size=toolkit.DEFAULT, discard_on=toolkit.DEFAULT)
    toolkit.resilient(timeout=toolkit.DEFAULT, budget=None)
    toolkit.RetryBudget(0.2, 5)  # type: ignore[call-arg]  # minimum= is keyword-only
    toolkit.cached(ttl=1, serializer=toolkit.DEFAULT, flags=store)
    toolkit.cached(ttl=1, serializer="yaml")  # type: ignore[arg-type]
    toolkit.cache_embeddings(model="typing", flags=store)


@toolkit.cached(ttl="10m", flags=toolkit.flags.current_store())
async def classify_switched(query: str) -> str:
    return query


@toolkit.cache_embeddings(model="typing-switched", flags=toolkit.flags.current_store())
async def embed_switched(texts: list[str]) -> list[list[float]]:
    return [[0.0] for _ in texts]


async def use_switched() -> None:
    assert_type(await classify_switched("refund"), str)
    assert_type(await embed_switched(["a"]), list[list[float]])


@toolkit.traced_agent("typing", conversation="session")
async def traced_answer(question: str, session: str) -> str:
    return question


@toolkit.traced_agent("typing-stream")
def traced_stream(n: int) -> Iterator[int]:
    yield n


@toolkit.step("typing.step")
async def traced_step(query: str) -> list[str]:
    return [query]


async def use_agents(chunks: AsyncIterator[bytes]) -> None:
    assert_type(await traced_answer("why?", session="s"), str)
    assert_type(list(traced_stream(1)), list[int])
    assert_type(await traced_step("q"), list[str])
    await traced_answer(1, session="s")  # type: ignore[arg-type]
    with toolkit.step("typing.block") as span:
        span.set_attribute("typing", 1)
    async with toolkit.llm_call("gpt-4o", provider="openai") as call:
        call.usage(input_tokens=1, output_tokens=2)
        stream = call.stream(chunks)
    assert_type(await anext(stream), bytes)
    toolkit.llm_call("gpt-4o", provider="openai", operation="chats")  # type: ignore[arg-type]


async def watch_the_loop() -> None:
    async with toolkit.LoopMonitor(blocked_threshold="50ms", stack_depth=10) as monitor:
        assert_type(monitor, toolkit.LoopMonitor)
    for block in monitor.recent_blocks():
        assert_type(block.duration, float)
        assert_type(block.blocking, toolkit.telemetry.loop.StackFrame | None)
    toolkit.LoopMonitor(stack_depth="deep")  # type: ignore[arg-type]


# --- fan-out (owner: fanout) ---


async def fan_out(query: str) -> None:
    async def search(text: str) -> list[str]:
        return [text]

    vector = toolkit.branch("vector", search, query, deadline="300ms", fallback=[])
    assert_type(vector, toolkit.pipelines.Branch[list[str]])
    result = await toolkit.gather(vector, deadline=1.0, first=1)
    assert_type(result, toolkit.pipelines.GatherResult)
    assert_type(result["vector"].outcome, toolkit.pipelines.BranchOutcome)
    assert_type(result["vector"].duration, float)
    assert_type(result.failed, tuple[str, ...])
    await toolkit.gather(vector, first="all")  # type: ignore[arg-type]


@toolkit.background
async def extract_memories(profile_id: str, text: str) -> None: ...


@toolkit.background(retries=3, name="typing.embed")
async def write_embedding(profile_id: str, vector: list[float]) -> int:
    return len(vector)


async def use_deferred() -> None:
    handle = await extract_memories.defer("p1", "I moved to Lyon")
    assert_type(handle, toolkit.pipelines.TaskHandle)
    assert_type(await write_embedding("p1", [0.1]), int)  # called directly: runs now
    assert_type(await toolkit.defer(write_embedding, "p1", [0.1]), toolkit.pipelines.TaskHandle)
    assert_type(await toolkit.defer(old_answer, "why?", retries=1), toolkit.pipelines.TaskHandle)
    await extract_memories.defer("p1", 3)  # type: ignore[arg-type]
    await toolkit.defer(old_answer, 42)  # type: ignore[arg-type]


# --- blocking calls: @offload and run_sync keep the types ---
@toolkit.offload
def save_message(db_path: str, text: str) -> int:
    return len(db_path + text)


@toolkit.offload(name="typing.parse")
def parse(document: bytes, *, strict: bool = False) -> list[str]:
    return [document.decode()]


async def offload_calls() -> None:
    assert_type(await save_message("chat.db", "hi"), int)
    assert_type(await parse(b"x", strict=True), list[str])
    assert_type(await toolkit.run_sync(save_message.__wrapped__, "chat.db", "hi"), int)
    assert_type(save_message.__wrapped__("chat.db", "hi"), int)
    await save_message("chat.db", 1)  # type: ignore[arg-type]
    await toolkit.run_sync(save_message.__wrapped__, "chat.db")  # type: ignore[call-arg]
