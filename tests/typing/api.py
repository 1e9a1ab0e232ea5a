"""Checked by mypy --strict (tests/unit/test_typing.py), never run: decorators keep types."""

from __future__ import annotations

from typing import assert_type

import toolkit


async def old_answer(question: str, *, retries: int = 0) -> str:
    return question


@toolkit.feature("typing.answer-v2", fallback=old_answer)
async def new_answer(question: str, *, retries: int = 0) -> str:
    return question


async def use() -> None:
    assert_type(await new_answer("why?", retries=1), str)
    evaluation = toolkit.flags.evaluate("typing.answer-v2")
    assert_type(evaluation.variant, str)
    assert_type(toolkit.flags.is_enabled("typing.answer-v2", subject="user-1"), bool)


@toolkit.cached(ttl="10m", tags=["intent"], namespace="typing")
async def classify(query: str, *, locale: str = "en") -> dict[str, str]:
    return {"intent": query, "locale": locale}


class Retriever:
    @toolkit.cached(ttl=60, key=lambda self, query, k=3: [query, k], serializer="msgpack")
    async def search(self, query: str, k: int = 3) -> list[str]:
        return [query] * k


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
    assert_type(await embed(["a", "b"]), list[list[float]])
    assert_type(await Embedder().embed(["a"]), list[list[float]])
    await classify(42)  # type: ignore[arg-type]
    await embed("not a list")  # type: ignore[arg-type]
