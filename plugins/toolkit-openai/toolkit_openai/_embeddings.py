"""Embedding requests of an async client through ``@cache_embeddings``, per text.

Opted in with ``instrument(client, embeddings_ttl="30d")``. Each text of a request is looked
up in the app's cache store under the client's base URL, the model and the dimensions asked
for; only the texts nobody has embedded yet are sent (each once, however often it repeats in
the batch), and a text another request is embedding meanwhile is waited for, not sent again.
The caller gets the SDK's own ``CreateEmbeddingResponse``: one item per input, in input
order, ``index`` as sent; ``model`` is the one that answered (the one asked for when every
text was cached); ``usage`` counts the tokens this request spent (0 when every text was
cached).

A text's vector does not depend on who asks, so the cache is shared by every caller, as
``@cache_embeddings`` is. What is not a batch of texts (token arrays), or asks for base64
vectors, or passes ``extra_body`` / ``extra_query`` (which may change the vectors), is sent
as it is, uncached.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from openai.types import CreateEmbeddingResponse

from toolkit.cache import cache_embeddings

MAX_MODELS: Final = 64
"""(model, dimensions) pairs of one client that are cached; the others are sent uncached."""

SendEmbeddings = Callable[[dict[str, Any]], Awaitable[Any]]


class _Request:
    """One caller's request: what its misses are sent with, and what they cost."""

    __slots__ = ("kwargs", "model", "send", "tokens")

    def __init__(self, send: SendEmbeddings, kwargs: dict[str, Any]) -> None:
        self.send = send
        self.kwargs = kwargs
        self.model: str | None = None
        self.tokens = 0


async def _embed_misses(self: _Request, texts: list[str]) -> list[list[float]]:
    # ``self`` is the receiver @cache_embeddings keeps apart: one caller's misses go in its
    # own request, so the usage it reports is its own.
    answer = await self.send({**self.kwargs, "input": texts})
    self.model = self.model or getattr(answer, "model", None)
    self.tokens += getattr(getattr(answer, "usage", None), "prompt_tokens", 0) or 0
    items = sorted(answer.data, key=lambda item: item.index)
    return [list(item.embedding) for item in items]


def _texts(kwargs: dict[str, Any]) -> list[str] | None:
    """The batch of texts a request embeds, or None when it is not one the cache serves."""
    if kwargs.get("extra_body") or kwargs.get("extra_query"):
        return None
    encoding = kwargs.get("encoding_format")
    if isinstance(encoding, str) and encoding != "float":
        return None
    given = kwargs.get("input")
    if isinstance(given, str):
        return [given]
    if isinstance(given, Sequence) and given and all(isinstance(t, str) for t in given):
        return list(given)
    return None


class EmbeddingCache:
    """The cached embedding requests of one client."""

    def __init__(self, send: SendEmbeddings, *, where: str, ttl: str | float, flags: Any) -> None:
        self._send = send
        self._where = where
        self._ttl = ttl
        self._flags = flags
        self._by_model: dict[tuple[str, object], Callable[..., Awaitable[list[list[float]]]]] = {}
        cache_embeddings(model=where, ttl=ttl)  # a bad ttl fails at instrument(), not later

    def _embedder(self, model: str, dimensions: object) -> Any:
        found = self._by_model.get((model, dimensions))
        if found is None and len(self._by_model) < MAX_MODELS:
            # Everything that changes the vectors is part of the key: where, model, size.
            key = f"{self._where}|{model}|{dimensions}"
            found = cache_embeddings(model=key, ttl=self._ttl, flags=self._flags)(_embed_misses)
            self._by_model[(model, dimensions)] = found
        return found

    async def create(self, kwargs: dict[str, Any]) -> CreateEmbeddingResponse | None:
        """The answer, from the cache where it can; None when the request is not cacheable."""
        texts = _texts(kwargs)
        model = kwargs.get("model")
        dimensions = kwargs.get("dimensions")
        if texts is None or not isinstance(model, str):
            return None
        embed = self._embedder(model, dimensions if isinstance(dimensions, int) else None)
        if embed is None:
            return None
        request = _Request(self._send, kwargs)
        vectors = await embed(request, texts)
        return CreateEmbeddingResponse.model_validate(
            {
                "object": "list",
                "model": request.model or model,
                "data": [
                    {"object": "embedding", "index": i, "embedding": vector}
                    for i, vector in enumerate(vectors)
                ],
                "usage": {"prompt_tokens": request.tokens, "total_tokens": request.tokens},
            }
        )
