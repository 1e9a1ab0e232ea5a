"""Scripted providers that run offline: a chat model and an embedding model.

Each takes time as a hosted one does (a seeded random delay, a bounded number of calls at once
like a provider's concurrency quota), can fail now and then (``error_rate``), and counts its
calls (``calls``, ``errors``): the demo reads them through ``mount_call_counts`` as the bill.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass


class ProviderError(ConnectionError):
    """The provider failed the call (a 5xx, a dropped connection): worth another try."""


def count_tokens(text: str) -> int:
    """Tokens as the scripted providers count them: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


@dataclass(frozen=True)
class Completion:
    """The model API's answer: its text and the tokens it counted, as a provider reports them."""

    text: str
    input_tokens: int
    output_tokens: int


class _Provider:
    def __init__(
        self, *, latency: tuple[float, float], slots: int, error_rate: float, seed: int
    ) -> None:
        self.latency = latency
        self.error_rate = error_rate
        self.calls = 0
        self.errors = 0
        self._rng = random.Random(seed)
        self._slots = asyncio.Semaphore(slots)

    async def _round_trip(self) -> None:
        """Wait for a slot and the call's latency; raise ProviderError at ``error_rate``."""
        self.calls += 1
        async with self._slots:
            await asyncio.sleep(self._rng.uniform(*self.latency))
        if self._rng.random() < self.error_rate:
            self.errors += 1
            raise ProviderError("503 from the provider: overloaded, try again")


class ScriptedModel(_Provider):
    """A chat model: ``complete(prompt)`` answers with ``reply(prompt)`` (by default, the
    prompt's last line echoed back) and the tokens in and out."""

    def __init__(
        self,
        name: str,
        *,
        latency: tuple[float, float] = (0.040, 0.120),
        slots: int = 8,
        error_rate: float = 0.0,
        seed: int = 7,
        reply: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(latency=latency, slots=slots, error_rate=error_rate, seed=seed)
        self.name = name
        self._reply = reply or (lambda prompt: prompt.strip().splitlines()[-1][:200])

    async def complete(self, prompt: str) -> Completion:
        await self._round_trip()
        text = self._reply(prompt)
        return Completion(text, count_tokens(prompt), count_tokens(text))


class ScriptedEmbedder(_Provider):
    """An embedding model: ``embed(text)`` is a unit vector of ``dimensions`` floats, the same
    for the same text; texts that share words point the same way (words hashed into buckets)."""

    def __init__(
        self,
        name: str,
        *,
        dimensions: int = 64,
        latency: tuple[float, float] = (0.020, 0.060),
        slots: int = 8,
        error_rate: float = 0.0,
        seed: int = 11,
    ) -> None:
        super().__init__(latency=latency, slots=slots, error_rate=error_rate, seed=seed)
        self.name = name
        self.dimensions = dimensions
        self.texts = 0  # texts embedded, over every call

    async def embed(self, text: str) -> list[float]:
        await self._round_trip()
        self.texts += 1
        return vector_of(text, self.dimensions)

    async def embed_many(self, texts: list[str]) -> list[list[float]]:
        """One API call for the batch ``texts`` (as the providers' batch endpoints are)."""
        await self._round_trip()
        self.texts += len(texts)
        return [vector_of(text, self.dimensions) for text in texts]


def vector_of(text: str, dimensions: int) -> list[float]:
    """The scripted embedding of ``text``: word counts hashed into ``dimensions``, normalised."""
    vector = [0.0] * dimensions
    for word in re.findall(r"[a-z]+", text.lower()):
        if len(word) > 2:
            bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
            vector[bucket % dimensions] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def similarity(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two unit vectors."""
    return sum(x * y for x, y in zip(a, b, strict=True))
