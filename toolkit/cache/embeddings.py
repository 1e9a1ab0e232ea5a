"""``@cache_embeddings``: a batch-aware cache in front of an embedding call.

Each text of a batch is looked up on its own (one round trip for the batch); the wrapped
function is called with only the texts nobody has embedded yet, each once; the vectors come
back in exactly the order of the input. This merge is where embedding caches go wrong
(LiteLLM returned partial hits at the wrong positions, BerriAI/litellm#29284), so it is kept
small and position-explicit. Within a process a text being embedded is never embedded again
meanwhile (one flight per text), and the new texts of calls made in the same loop turn go to
the function together, as their lookups went to the backend together.

What a hit spared (``toolkit.cache.saved.*``): each text's share of the model calls recorded
while its batch was embedded, in a key beside its vector (see ``_saved``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import logging
import weakref
from collections.abc import Callable, Coroutine, Sequence, Sized
from typing import Any, Final, ParamSpec, cast

from toolkit._deadlines import own_deadline, time_left
from toolkit._savings import Tally, collecting
from toolkit._tasks import spawn
from toolkit.cache._arguments import method_receiver, parse_tags, parse_ttl
from toolkit.cache._current import current_cache
from toolkit.cache._keys import KEY_DIGEST_BYTES
from toolkit.cache._reads import generation_or_none, read_through
from toolkit.cache._saved import add_share, shares
from toolkit.cache._store import CacheStore
from toolkit.cache._vectors import as_lists, pack, unpack
from toolkit.errors import BackendError, ConfigurationError, DeadlineExceeded
from toolkit.flags import CACHE_EMBEDDINGS, FlagSource, current_flags
from toolkit.telemetry import names

P = ParamSpec("P")

logger = logging.getLogger("toolkit.cache")

CACHE_NAME: Final = "embeddings"
"""The ``toolkit.cache.name`` of the embedding cache's metrics (one for every model)."""
DEFAULT_TTL: Final = 7 * 24 * 3600.0
"""Seconds an embedding is kept: a model's vector for a text does not change, so long; the
bound is on storage, not on freshness."""
_KEY_PREFIX: Final = "embeddings:"
_SHARE_PREFIX: Final = "embeddings.saved:"
"""Each text's share of what its batch cost, under the digest of its vector's key."""
DEFAULT_MAX_BATCH: Final = 32
"""Texts one merged call may send: within the batch limits of common embedding APIs and
servers (Text Embeddings Inference accepts 32 by default, Cohere 96, OpenAI 2048)."""

EmbedFunction = Callable[P, Coroutine[Any, Any, Sequence[Sequence[float]]]]


def cache_embeddings(
    *,
    model: str,
    ttl: str | float = DEFAULT_TTL,
    tags: Sequence[str] = (),
    max_batch: int = DEFAULT_MAX_BATCH,
    flags: FlagSource | None = None,
) -> Callable[[EmbedFunction[P]], Callable[P, Coroutine[Any, Any, list[list[float]]]]]:
    """Cache an embedding function per text, so that a batch embeds only what is new.

        @toolkit.cache_embeddings(model="text-embedding-3-small")
        async def embed(texts: list[str]) -> list[list[float]]:
            response = await openai.embeddings.create(model="text-embedding-3-small", input=texts)
            return [item.embedding for item in response.data]

    Every text is looked up under a hash of ``model`` and the text, all in one backend round
    trip. The function is called with the misses only, in their first-occurrence order and
    each text once, however often it repeats in the batch; its vectors are stored and the
    result lists one vector per input text, in input order. Vectors are stored as float32, and
    every vector returned (hit or miss) is that float32 value as a Python float, so the result
    does not depend on what was cached. An empty batch returns ``[]`` without a call.

    Concurrent calls share work within the process: a text another call is embedding is
    waited for, not embedded again, and the new texts of calls made in the same event-loop
    turn (on the same object, for a method) go to the function as one call of at most
    ``max_batch`` texts; a caller's own misses always go together, however many. Every caller
    of a merged call gets its exception if it fails.

    Args:
        model: names everything that changes the vectors: the model, and its dimensions,
            input type or normalization if you vary them (``"text-embedding-3-small@512"``).
        ttl: how long a vector is kept, e.g. ``"30d"`` or seconds; 7 days when not given.
        tags: for ``toolkit.cache.invalidate(tags=[...])``.
        max_batch: the most texts a call merged from several callers may send (your
            embedding API's batch limit); 1 turns merging off.
        flags: where the ``cache.embeddings`` flag is read, at every call; the current store
            when None.

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
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigurationError(
            f"@cache_embeddings(max_batch={max_batch!r}): a whole number of texts, at least 1, "
            "e.g. max_batch=32"
        )
    seed = hashlib.blake2b(model.encode() + b"\x00", digest_size=KEY_DIGEST_BYTES)

    def decorate(
        function: EmbedFunction[P],
    ) -> Callable[P, Coroutine[Any, Any, list[list[float]]]]:
        cache = _EmbeddingCache(
            function, seed=seed, ttl=seconds, tags=tag_tuple, max_batch=max_batch, flags=flags
        )

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
        max_batch: int,
        flags: FlagSource | None,
    ) -> None:
        qualname = getattr(function, "__qualname__", repr(function))
        if not inspect.iscoroutinefunction(function):
            kind = (
                "a generator function; return the list of vectors instead"
                if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)
                else "not"
            )
            raise ConfigurationError(
                f"@cache_embeddings needs an async function (async def embed(texts)): "
                f"{qualname} is {kind}"
            )
        parameters = list(inspect.signature(function).parameters.values())
        receiver = 1 if method_receiver(parameters) is not None else 0
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
        self.max_batch = max_batch
        self.flags = flags
        self.warned = False
        self._flights: weakref.WeakKeyDictionary[CacheStore, _Flights] = weakref.WeakKeyDictionary()

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[list[float]]:
        store = current_cache()
        positional = len(args) > self.position
        if len(args) + len(kwargs) != self.position + 1 or (
            not positional and self.parameter not in kwargs
        ):
            return as_lists(await self.function(*args, **kwargs))  # a wrong call: its TypeError
        texts = args[self.position] if positional else kwargs[self.parameter]
        if not (self.flags or current_flags()).is_enabled(CACHE_EMBEDDINGS):
            store.record(CACHE_NAME, names.CACHE_BYPASS, count=_count(texts))
            return as_lists(await self.function(*args, **kwargs))
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
            return as_lists(await self.function(*args, **kwargs))
        if not texts:
            return []

        keys = [self._key(text) for text in texts]
        try:
            # The shares in the same round trip: a few bytes each, when there are any.
            read = await read_through(store, [*keys, *map(share_key, keys)], self.ttl)
        except BackendError:
            read = [None] * (2 * len(keys))
            failed = True
        else:
            failed = False
        stored, stored_shares = read[: len(keys)], read[len(keys) :]

        vectors: list[list[float] | None] = [None] * len(keys)
        missing: dict[str, str] = {}  # key -> its text, first occurrence first
        spared = Tally()
        for i, (key, raw) in enumerate(zip(keys, stored, strict=True)):
            if raw is not None and len(raw) % 4 == 0:
                vectors[i] = unpack(raw)
                add_share(spared, stored_shares[i])
            else:
                missing.setdefault(key, texts[i])
        if not missing:
            if not failed:
                store.record(CACHE_NAME, names.CACHE_HIT, count=len(keys))
                for counts in spared.models.values():
                    counts[0] = 1  # the request, wholly spared: a call per model
                store.saved.add(CACHE_NAME, spared)
            return cast(list[list[float]], vectors)  # every place is filled

        flights = self._flights.get(store)
        if flights is None:
            flights = self._flights[store] = _Flights(self, store)
        waiting, embedding = flights.join(args[: self.position], missing)
        if failed:
            store.record(CACHE_NAME, names.CACHE_ERROR, count=len(keys))
        else:
            # Texts another call is embedding cost nothing more: counted as hits, as a
            # caller served by another's computation is for the other caches.
            fresh = sum(1 for key in keys if key in embedding)
            if fresh < len(keys):
                store.record(CACHE_NAME, names.CACHE_HIT, count=len(keys) - fresh)
            if fresh:
                store.record(CACHE_NAME, names.CACHE_MISS, count=fresh)
            store.saved.add(CACHE_NAME, spared)  # its hits' tokens; the call was made
        # asyncio.wait, not gather: a caller cancelled here must not cancel the flights
        # other callers wait for too. At most the time left: the flights go on for the others.
        _, late = await asyncio.wait(waiting.values(), timeout=time_left())
        if late:
            raise DeadlineExceeded(
                f"{self.qualname}: the deadline of this work passed while {len(late)} of its "
                "texts were being embedded"
            )
        computed = {key: unpack(future.result()) for key, future in waiting.items()}
        for i, key in enumerate(keys):
            if vectors[i] is None:
                vectors[i] = computed[key]
        return cast(list[list[float]], vectors)  # every place is filled

    def _key(self, text: str) -> str:
        digest = self.seed.copy()
        digest.update(text.encode("utf-8", "surrogatepass"))
        return _KEY_PREFIX + digest.hexdigest()


class _Batch:
    """New texts for one call of the function, on one receiver."""

    __slots__ = ("futures", "receiver", "texts")

    def __init__(self, receiver: tuple[Any, ...]) -> None:
        self.receiver = receiver
        self.texts: list[str] = []
        self.futures: dict[str, asyncio.Future[bytes]] = {}


class _Flights:
    """The texts one decorated function is embedding in this process, for one store: one
    flight per text, and the new texts of a loop turn sent as few calls as ``max_batch``
    allows."""

    def __init__(self, cache: _EmbeddingCache, store: CacheStore) -> None:
        self._cache = cache
        self._store = store
        self._flying: dict[str, asyncio.Future[bytes]] = {}
        self._pending: list[_Batch] = []  # this loop turn's calls, still taking texts
        self._tasks: set[asyncio.Task[None]] = set()

    def join(
        self, receiver: tuple[Any, ...], missing: dict[str, str]
    ) -> tuple[dict[str, asyncio.Future[bytes]], set[str]]:
        """A future of the packed vector of every missing key, and the keys this call put
        in flight (the others were being embedded already)."""
        loop = asyncio.get_running_loop()
        flying = self._flying
        waiting: dict[str, asyncio.Future[bytes]] = {}
        new: dict[str, str] = {}
        for key, text in missing.items():
            future = flying.get(key)
            if future is None:
                new[key] = text
            else:
                waiting[key] = future
        if new:
            if not self._pending:
                loop.call_soon(self._flush)
            # First fit among this turn's calls on the same object (the same one, not an
            # equal one: each may hold its own client), else a call of its own.
            room = self._cache.max_batch - len(new)
            batch = next(
                (
                    b
                    for b in self._pending
                    if len(b.texts) <= room
                    and len(b.receiver) == len(receiver)
                    and all(x is y for x, y in zip(b.receiver, receiver, strict=True))
                ),
                None,
            )
            if batch is None:
                batch = _Batch(receiver)
                self._pending.append(batch)
            for key, text in new.items():
                future = flying[key] = batch.futures[key] = loop.create_future()
                batch.texts.append(text)
                waiting[key] = future
        return waiting, set(new)

    def _flush(self) -> None:
        batches, self._pending = self._pending, []
        for batch in batches:
            spawn(self._tasks, self._embed(batch))

    async def _embed(self, batch: _Batch) -> None:
        # The call is every waiter's, not its first caller's: it runs under a deadline of its
        # own (``cache.wait``, as long as a caller waits for another's miss), so that the
        # first caller's deadline cannot cut it for the others; each waits its own time left.
        with own_deadline(self._store.settings.wait):
            await self._embed_batch(batch)

    async def _embed_batch(self, batch: _Batch) -> None:
        cache, store = self._cache, self._store
        try:
            # Read before the call: vectors computed before an invalidation of their tags are
            # not stored after it.
            generation = await generation_or_none(store) if cache.tags else None
            with collecting() as spent:
                computed = await cache.function(*batch.receiver, batch.texts)
            if len(computed) != len(batch.texts):
                raise ValueError(
                    f"{cache.qualname} returned {len(computed)} vectors for "
                    f"{len(batch.texts)} texts; @cache_embeddings needs exactly one vector per "
                    "text, in order (nothing was cached)"
                )
            packed = [pack(vector) for vector in computed]
        except BaseException as exc:
            self._land(batch)
            for future in batch.futures.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: no warning if every caller left
            if not isinstance(exc, Exception):
                raise
            return
        items = list(zip(batch.futures, packed, strict=True))
        try:
            if generation is not None or not cache.tags:
                written = items + [
                    (share_key(key), share)
                    for key, share in zip(batch.futures, shares(spent, batch.texts), strict=True)
                    if share is not None
                ]
                # A failed write is counted by the backend; the vectors are returned anyway.
                with contextlib.suppress(BackendError):
                    await store.set_many(written, cache.ttl, cache.tags, generation)
        finally:
            # Stored before anyone is answered (as a @cached leader does): a call arriving
            # meanwhile joins this flight rather than missing in the backend.
            self._land(batch)
            for (_, raw), future in zip(items, batch.futures.values(), strict=True):
                if not future.done():
                    future.set_result(raw)

    def _land(self, batch: _Batch) -> None:
        flying = self._flying
        for key, future in batch.futures.items():
            if flying.get(key) is future:
                del flying[key]


def share_key(key: str) -> str:
    """Where the share of what its batch cost is kept beside the vector under ``key``."""
    return _SHARE_PREFIX + key.removeprefix(_KEY_PREFIX)


def _is_batch(texts: object) -> bool:
    return (
        isinstance(texts, Sequence)
        and not isinstance(texts, str)
        and all(isinstance(text, str) for text in texts)
    )


def _count(texts: object) -> int:
    return len(texts) if isinstance(texts, Sized) else 1
