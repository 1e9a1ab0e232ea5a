"""``@cache_embeddings``: a batch-aware cache in front of an embedding call.

Each text of a batch is looked up on its own (one round trip for the batch); the wrapped
function is called once, with only the texts nobody has embedded yet, each once; the vectors
come back in exactly the order of the input. This merge is where embedding caches go wrong
(LiteLLM returned partial hits at the wrong positions, BerriAI/litellm#29284), so it is kept
small and position-explicit.
"""

from __future__ import annotations

import array
import contextlib
import functools
import hashlib
import inspect
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence, Sized
from typing import Any, Final, ParamSpec, cast

from toolkit.cache._current import current_cache
from toolkit.cache.functions import parse_tags, parse_ttl, read_through
from toolkit.errors import BackendError, ConfigurationError
from toolkit.flags import CACHE_EMBEDDINGS, current_store
from toolkit.telemetry import names

P = ParamSpec("P")

logger = logging.getLogger("toolkit.cache")

CACHE_NAME: Final = "embeddings"
"""The ``toolkit.cache.name`` of the embedding cache's metrics (one for every model)."""
DEFAULT_TTL: Final = 7 * 24 * 3600.0
"""Seconds an embedding is kept: a model's vector for a text does not change, so long; the
bound is on storage, not on freshness."""
_KEY_PREFIX: Final = "embeddings:"
_DIGEST_BYTES: Final = 16
_BIG_ENDIAN: Final = sys.byteorder == "big"
_METHOD_RECEIVERS: Final = ("self", "cls")

EmbedFunction = Callable[P, Coroutine[Any, Any, Sequence[Sequence[float]]]]


def pack(vector: Sequence[float]) -> bytes:
    """``vector`` as little-endian float32 bytes (4 bytes a dimension)."""
    packed = array.array("f", vector)
    if _BIG_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def unpack(raw: bytes) -> list[float]:
    """The vector that :func:`pack` stored."""
    vector = array.array("f")
    vector.frombytes(raw)
    if _BIG_ENDIAN:
        vector.byteswap()
    return vector.tolist()


def cache_embeddings(
    *,
    model: str,
    ttl: str | float = DEFAULT_TTL,
    tags: Sequence[str] = (),
) -> Callable[[EmbedFunction[P]], Callable[P, Coroutine[Any, Any, list[list[float]]]]]:
    """Cache an embedding function per text, so that a batch embeds only what is new.

        @toolkit.cache_embeddings(model="text-embedding-3-small")
        async def embed(texts: list[str]) -> list[list[float]]:
            response = await openai.embeddings.create(model="text-embedding-3-small", input=texts)
            return [item.embedding for item in response.data]

    Every text is looked up under a hash of ``model`` and the text, all in one backend round
    trip. The function is called once with the misses only, in their first-occurrence order
    and each text once, however often it repeats in the batch; its vectors are stored and the
    result lists one vector per input text, in input order. Vectors are stored as float32, and
    every vector returned (hit or miss) is that float32 value as a Python float, so the result
    does not depend on what was cached. An empty batch returns ``[]`` without a call.

    Args:
        model: names everything that changes the vectors: the model, and its dimensions,
            input type or normalization if you vary them (``"text-embedding-3-small@512"``).
        ttl: how long a vector is kept, e.g. ``"30d"`` or seconds; 7 days when not given.
        tags: for ``toolkit.cache.invalidate(tags=[...])``.

    Raises:
        ConfigurationError: at decoration, for a sync function, a function taking anything
            but the texts (and ``self``), or an invalid argument.

    The wrapped function raises ValueError (nothing stored) when it does not return exactly
    one vector per text it was given. The ``cache.embeddings`` flag turns the cache off (calls
    go straight to the function) at the next call; backend failures embed every text.
    """
    if not isinstance(model, str) or not model:
        raise ConfigurationError(
            f"@cache_embeddings(model={model!r}): the model name, part of every key, "
            "e.g. model='text-embedding-3-small'"
        )
    seconds = parse_ttl(ttl, "@cache_embeddings")
    tag_tuple = parse_tags(tags, "@cache_embeddings")
    seed = hashlib.blake2b(model.encode() + b"\x00", digest_size=_DIGEST_BYTES)

    def decorate(
        function: EmbedFunction[P],
    ) -> Callable[P, Coroutine[Any, Any, list[list[float]]]]:
        cache = _EmbeddingCache(function, seed=seed, ttl=seconds, tags=tag_tuple)

        @functools.wraps(function)
        async def cached_embed(*args: P.args, **kwargs: P.kwargs) -> list[list[float]]:
            return await cache.call(args, kwargs)

        return cached_embed

    return decorate


class _EmbeddingCache:
    """One decorated embedding function: where its texts are, how its keys are made."""

    def __init__(
        self,
        function: Callable[..., Coroutine[Any, Any, Sequence[Sequence[float]]]],
        *,
        seed: hashlib.blake2b,
        ttl: float,
        tags: tuple[str, ...],
    ) -> None:
        qualname = getattr(function, "__qualname__", repr(function))
        if not inspect.iscoroutinefunction(function):
            raise ConfigurationError(
                f"@cache_embeddings needs an async function (async def embed(texts)): "
                f"{qualname} is not"
            )
        parameters = list(inspect.signature(function).parameters.values())
        receiver = 1 if parameters and parameters[0].name in _METHOD_RECEIVERS else 0
        rest = parameters[receiver:]
        if len(rest) != 1 or rest[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            found = ", ".join(p.name for p in parameters)
            raise ConfigurationError(
                f"@cache_embeddings wraps async def embed(texts) -> vectors; {qualname} takes "
                f"({found}). Anything else that changes the vectors belongs in model=..., and "
                "the rest can be bound with functools.partial or a closure."
            )
        self.function = function
        self.qualname = qualname
        self.position = receiver
        self.parameter = rest[0].name
        self.seed = seed
        self.ttl = ttl
        self.tags = tags
        self.warned = False

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[list[float]]:
        store = current_cache()
        positional = len(args) > self.position
        if not positional and self.parameter not in kwargs:
            return _as_lists(await self.function(*args, **kwargs))  # a wrong call: its TypeError
        texts = args[self.position] if positional else kwargs[self.parameter]
        if not current_store().is_enabled(CACHE_EMBEDDINGS):
            store.record(CACHE_NAME, names.CACHE_BYPASS, count=_count(texts))
            return _as_lists(await self.function(*args, **kwargs))
        if not _is_batch(texts):
            if not self.warned:
                self.warned = True
                logger.warning(
                    "@cache_embeddings %s: called with a %s, not a sequence of str (token "
                    "lists? a single string?); such calls go straight to the function, uncached",
                    self.qualname,
                    type(texts).__name__,
                )
            store.record(CACHE_NAME, names.CACHE_BYPASS, count=_count(texts))
            return _as_lists(await self.function(*args, **kwargs))
        if not texts:
            return []

        keys = [self._key(text) for text in texts]
        try:
            stored = await read_through(store, keys, self.ttl)
        except BackendError:
            stored = [None] * len(keys)
            failed = True
        else:
            failed = False

        vectors: list[list[float] | None] = [None] * len(keys)
        missing: dict[str, int] = {}  # key -> its place in the call, first occurrence first
        batch: list[str] = []
        for i, (key, raw) in enumerate(zip(keys, stored, strict=True)):
            if raw is not None and len(raw) % 4 == 0:
                vectors[i] = unpack(raw)
            elif key not in missing:
                missing[key] = len(batch)
                batch.append(texts[i])
        hits = len(keys) - sum(vector is None for vector in vectors)
        if failed:
            store.record(CACHE_NAME, names.CACHE_ERROR, count=len(keys))
        else:
            if hits:
                store.record(CACHE_NAME, names.CACHE_HIT, count=hits)
            if hits < len(keys):
                store.record(CACHE_NAME, names.CACHE_MISS, count=len(keys) - hits)
        if not batch:
            return cast(list[list[float]], vectors)  # every place is filled

        call_args, call_kwargs = args, kwargs
        if positional:
            call_args = (*args[: self.position], batch, *args[self.position + 1 :])
        else:
            call_kwargs = {**kwargs, self.parameter: batch}
        computed = await self.function(*call_args, **call_kwargs)
        if len(computed) != len(batch):
            raise ValueError(
                f"{self.qualname} returned {len(computed)} vectors for {len(batch)} texts; "
                "@cache_embeddings needs exactly one vector per text, in order (nothing was "
                "cached)"
            )
        packed = [pack(vector) for vector in computed]
        fresh = [unpack(raw) for raw in packed]
        for i, key in enumerate(keys):
            if vectors[i] is None:
                vectors[i] = fresh[missing[key]]
        if not failed:
            # A failed write is counted by the backend; the vectors are returned anyway.
            with contextlib.suppress(BackendError):
                await store.set_many(
                    [(key, packed[place]) for key, place in missing.items()], self.ttl, self.tags
                )
        return cast(list[list[float]], vectors)  # every place is filled

    def _key(self, text: str) -> str:
        digest = self.seed.copy()
        digest.update(text.encode("utf-8", "surrogatepass"))
        return _KEY_PREFIX + digest.hexdigest()


def _is_batch(texts: object) -> bool:
    return (
        isinstance(texts, Sequence)
        and not isinstance(texts, str)
        and all(isinstance(text, str) for text in texts)
    )


def _count(texts: object) -> int:
    return len(texts) if isinstance(texts, Sized) else 1


def _as_lists(vectors: Sequence[Sequence[float]]) -> list[list[float]]:
    """The function's own vectors, unchanged when they are lists already (the cache is off)."""
    if isinstance(vectors, list) and all(isinstance(v, list) for v in vectors):
        return vectors
    return [list(vector) for vector in vectors]
