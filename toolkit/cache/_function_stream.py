"""``@cached`` on an async generator function: a stream's chunks stored once it ended, replayed
with the same chunking.

A miss streams from the function as it produces, keeping a copy of each chunk (serialized as
it arrives, so the copy is bounded in bytes by ``cache.max_body_bytes``); once the stream
has ended normally the chunks are stored as one entry. A stream that fails, or that its
consumer closes early, stores nothing: a partial answer is never replayed as a whole one. A
stream over the size cap is served in full to its caller and not stored (counted as
``bypass``). A hit yields the stored chunks, one by one, as they were produced.

No single flight: concurrent misses of one key each stream from the function. A follower
waiting for the leader's complete entry would get its first chunk only when the leader's
last one arrived, and nothing at all when the leader's consumer hung up; a stream is cached
for the callers that come after it, not for those that arrive during it.

Tags work as for coroutines: the invalidation clock is read before the function starts, and
an invalidation of one of the stream's tags while it runs keeps it from being stored. A
fallback that answered inside (``@resilient``) keeps it from being stored too.

The stored form is a header and each chunk's serialized bytes behind its length, so that
loading gives back the chunks as they were cut; the model-call tally, if any, follows it
(``_saved``).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any, Final

from toolkit._fallback import begin, resumed
from toolkit._savings import Tally, collecting
from toolkit.cache._codec import Codec, configured_codec
from toolkit.cache._current import current_cache, current_caller
from toolkit.cache._reads import generation_or_none, read_through
from toolkit.cache._saved import with_saved, without_saved
from toolkit.cache._store import CacheStore
from toolkit.errors import BackendError
from toolkit.flags import CACHE_FUNCTION, current_flags
from toolkit.telemetry import names

if TYPE_CHECKING:
    from toolkit.cache._function_cache import FunctionCache

HEADER: Final = b"\xfftoolkit.stream\x01"
"""Starts every stored stream: no serializer's output starts so (JSON and msgpack never
begin with 0xff, pickle begins with its PROTO opcode), so a value stored by the same
function before it became a stream reads as a miss."""
_LENGTH: Final = struct.Struct(">I")


def pack(parts: list[bytes]) -> bytes:
    """The stored form of a stream whose chunks serialized to ``parts``."""
    return HEADER + b"".join(_LENGTH.pack(len(part)) + part for part in parts)


def unpack(raw: bytes) -> list[bytes] | None:
    """Each chunk's serialized bytes, or None when ``raw`` is not a stored stream."""
    if not raw.startswith(HEADER):
        return None
    parts: list[bytes] = []
    at = len(HEADER)
    while at < len(raw):
        if at + _LENGTH.size > len(raw):
            return None
        (size,) = _LENGTH.unpack_from(raw, at)
        at += _LENGTH.size
        if at + size > len(raw):
            return None
        parts.append(raw[at : at + size])
        at += size
    return parts


class _Copy:
    """The chunks of one stream, serialized as they come, until the size cap says stop."""

    __slots__ = ("limit", "parts", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] | None = []
        self.size = len(HEADER)

    def add(self, part: bytes | None) -> None:
        """Keep ``part``; None (a chunk with no stored form) or one past the cap drops the
        copy: the stream goes on, unstored."""
        if self.parts is None:
            return
        if part is None:
            self.parts = None
            return
        self.size += _LENGTH.size + len(part)
        if self.size > self.limit:
            self.parts = None
            return
        self.parts.append(part)


def stream_wrapper(cache: FunctionCache) -> Callable[..., AsyncGenerator[Any, None]]:
    """The async generator function that serves ``cache.function``'s streams (see the
    module)."""
    function = cache.function

    async def cached_stream(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        store = current_cache()
        planned = await _plan(cache, store, args, kwargs)
        if planned is None:
            store.record(cache.name, names.CACHE_BYPASS)
            async with contextlib.aclosing(function(*args, **kwargs)) as bare:
                async for chunk in bare:
                    yield chunk
            return
        key, codec, tags = planned
        try:
            raw = (await read_through(store, [key], cache.ttl))[0]
        except BackendError:
            store.record(cache.name, names.CACHE_ERROR, key)
            async with contextlib.aclosing(function(*args, **kwargs)) as bare:
                async for chunk in bare:
                    yield chunk
            return
        found = None if raw is None else _load(cache, codec, raw)
        if found is not None:
            store.record(cache.name, names.CACHE_HIT, key)
            store.saved.add(cache.name, found[1])
            for chunk in found[0]:
                yield chunk
            return

        # A miss. Under tags, the invalidation clock is read before the function reads
        # anything: the entry is refused if one of them is invalidated while it streams.
        generation = await generation_or_none(store) if tags else None
        copy = _Copy(store.settings.max_body_bytes)
        computation = begin()
        tally = Tally()
        ended = False
        source: AsyncGenerator[Any, None] = function(*args, **kwargs)
        try:
            while True:
                with resumed(computation), collecting(tally):
                    try:
                        chunk = await anext(source)
                    except StopAsyncIteration:
                        ended = True
                        break
                if copy.parts is not None:
                    copy.add(cache._dump(codec, chunk))
                yield chunk
        finally:
            await source.aclose()
            if not ended:  # failed or closed early: nothing stored, counted as the miss it was
                store.record(cache.name, names.CACHE_MISS, key)
        parts = copy.parts
        store.record(cache.name, names.CACHE_MISS if parts is not None else names.CACHE_BYPASS, key)
        # A fallback's answer is not kept (see _fallback); nor is a tagged stream without its
        # invalidation clock, which could outlive an invalidation it never saw.
        if parts is not None and not computation.fallback and (generation is not None or not tags):
            with contextlib.suppress(BackendError):  # counted by the backend
                await store.set(key, with_saved(pack(parts), tally), cache.ttl, tags, generation)

    return cached_stream


async def _plan(
    cache: FunctionCache, store: CacheStore, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, Codec, tuple[str, ...]] | None:
    """The call's key, serializer and tags; None when it goes straight to the function (the
    flag is off, or its arguments make no key)."""
    if not (cache.flags or current_flags()).is_enabled(CACHE_FUNCTION):
        return None
    caller = await current_caller(store, cache.qualname) if cache.per_caller else None
    entry = cache.keys.entry(args, kwargs, caller)
    if entry is None:
        return None
    codec = cache.codec or configured_codec(store)
    return cache.keys.key(codec, entry[0]), codec, entry[1]


def _load(cache: FunctionCache, codec: Codec, raw: bytes) -> tuple[list[Any], Tally | None] | None:
    """The stored chunks and what computing them cost, or None (a miss) when ``raw`` is not
    a stream this function's serializer can load."""
    raw, tally = without_saved(raw)
    parts = unpack(raw)
    if parts is None:
        return None
    chunks = []
    for part in parts:
        loaded = cache._load(codec, part)
        if loaded is None:
            return None
        chunks.append(loaded[0])
    return chunks, tally
