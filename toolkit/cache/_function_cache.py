"""One ``@cached`` function's calls: the async path (the backend, one computation per key
across the fleet) and the sync path (in this process only), each serving from the cache what
it can and calling the function for the rest."""

from __future__ import annotations

import contextlib
import inspect
import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from toolkit._fallback import computing
from toolkit._savings import Tally, collecting
from toolkit.cache._codec import PICKLE_WARNING, Codec, configured_codec
from toolkit.cache._current import current_cache, current_caller, current_caller_now
from toolkit.cache._function_key import FunctionKey
from toolkit.cache._reads import generation_or_none, read_through
from toolkit.cache._saved import with_saved, without_saved
from toolkit.cache._singleflight import SingleFlight
from toolkit.cache._store import CacheStore
from toolkit.errors import BackendError, ConfigurationError
from toolkit.flags import CACHE_FUNCTION, FlagSource, current_flags
from toolkit.telemetry import names

logger = logging.getLogger("toolkit.cache")

_flights: weakref.WeakKeyDictionary[CacheStore, SingleFlight[tuple[Any]]] = (
    weakref.WeakKeyDictionary()
)


def _flight(store: CacheStore) -> SingleFlight[tuple[Any]]:
    """The store's single flight (``cache.lease``, ``cache.wait``), shared by every function:
    their keys never collide."""
    flight = _flights.get(store)
    if flight is None:
        settings = store.settings
        flight = _flights[store] = SingleFlight(
            store.backend, lease=settings.lease, wait=settings.wait
        )
    return flight


class FunctionCache:
    """Everything about one decorated function that can be known before its first call.

    Raises:
        ConfigurationError: ``function`` is not a function (a classmethod or staticmethod
            object, say), or is a sync generator function.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        ttl: float,
        key: Callable[..., object] | None,
        tags: tuple[str, ...],
        tag_function: Callable[..., Iterable[str]] | None,
        namespace: str | None,
        codec: Codec | None,
        per_caller: bool,
        flags: FlagSource | None,
    ) -> None:
        qualname = getattr(function, "__qualname__", repr(function))
        if isinstance(function, classmethod | staticmethod) or not callable(function):
            hint = (
                "; put @cached below @classmethod/@staticmethod"
                if isinstance(function, classmethod | staticmethod)
                else ""
            )
            raise ConfigurationError(
                f"@cached needs a function (def or async def): {qualname} is not{hint}"
            )
        if inspect.isgeneratorfunction(function) or inspect.isgeneratorfunction(
            getattr(function, "__call__", None)  # noqa: B004 - generator callable objects
        ):
            # A call returns a generator object, which no codec can store: never cached.
            raise ConfigurationError(
                f"@cached cannot store the chunks of a sync generator function: {qualname}. "
                "Make it an async generator function (async def with yield: its chunks are "
                "stored and replayed), or return a list"
            )
        self.is_stream = inspect.isasyncgenfunction(function)
        self.is_async = inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
            getattr(function, "__call__", None)  # noqa: B004 - async callable objects
        )
        self.function = function
        self.qualname = qualname
        self.ttl = ttl
        self.per_caller = per_caller
        self.flags = flags
        self.name = namespace or function.__module__
        self.codec = codec
        if codec is not None and codec.name == "pickle":
            logger.warning(PICKLE_WARNING, f"@cached {qualname}")
        self.keys = FunctionKey(
            function,
            qualname=qualname,
            prefix=f"{self.name}:{qualname}:",
            key=key,
            tags=tags,
            tag_function=tag_function,
            per_caller=per_caller,
        )
        self.warned_value = False

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        store = current_cache()
        if not (self.flags or current_flags()).is_enabled(CACHE_FUNCTION):
            store.record(self.name, names.CACHE_BYPASS)
            return await self.function(*args, **kwargs)
        caller = await current_caller(store, self.qualname) if self.per_caller else None
        entry = self.keys.entry(args, kwargs, caller)
        if entry is None:
            store.record(self.name, names.CACHE_BYPASS)
            return await self.function(*args, **kwargs)
        codec = self.codec or configured_codec(store)
        key = self.keys.key(codec, entry[0])
        tags = entry[1]
        try:
            found = await self._lookup(store, codec, key)
        except BackendError:
            store.record(self.name, names.CACHE_ERROR, key)
            return await self.function(*args, **kwargs)
        if found is not None:
            store.record(self.name, names.CACHE_HIT, key)
            store.saved.add(self.name, found[1])
            return found[0]

        result = names.CACHE_MISS

        async def lookup() -> tuple[Any] | None:
            nonlocal result
            try:
                found = await self._lookup(store, codec, key)
            except BackendError:
                return None  # keep waiting: the leader may still store it
            if found is None:
                return None
            result = names.CACHE_HIT
            store.saved.add(self.name, found[1])  # the leader's calls, spared here
            return (found[0],)

        async def compute() -> tuple[Any]:
            # Under tags, read the invalidation clock before anything the function reads:
            # its write is refused if one of them is invalidated while it runs.
            generation = await generation_or_none(store) if tags else None
            with computing() as computation, collecting() as tally:
                value = await self.function(*args, **kwargs)
            # A fallback's answer is not kept (see _fallback); nor is a tagged value without
            # its invalidation clock, which could outlive an invalidation it never saw.
            if not computation.fallback and (generation is not None or not tags):
                await self._store(store, codec, key, value, tags, generation, tally)
            return (value,)

        def gave_up(reason: str) -> None:
            nonlocal result
            result = reason  # a wait cut short: which bound ran out (see SingleFlight.run)

        try:
            return (await _flight(store).run(key, lookup, compute, gave_up=gave_up))[0]
        finally:
            store.record(self.name, result, key)

    def call_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A sync function's call: its entries live in this process (``sync_entries``)."""
        store = current_cache()
        if not (self.flags or current_flags()).is_enabled(CACHE_FUNCTION):
            store.record(self.name, names.CACHE_BYPASS)
            return self.function(*args, **kwargs)
        caller = current_caller_now(store, self.qualname) if self.per_caller else None
        entry = self.keys.entry(args, kwargs, caller)
        if entry is None:
            store.record(self.name, names.CACHE_BYPASS)
            return self.function(*args, **kwargs)
        codec = self.codec or configured_codec(store)
        key = self.keys.key(codec, entry[0])
        table = store.sync_entries
        raw = table.get_many([key])[0]
        found = None if raw is None else self._load(codec, raw)
        if found is not None:
            store.record(self.name, names.CACHE_HIT, key)
            store.saved.add(self.name, found[1])
            return found[0]
        store.record(self.name, names.CACHE_MISS, key)
        generation = table.generation()
        with collecting() as tally:
            value = self.function(*args, **kwargs)
        stored = self._dump(codec, value)
        if stored is not None:
            table.set_many([(key, with_saved(stored, tally))], self.ttl, entry[1], generation)
        return value

    async def _lookup(
        self, store: CacheStore, codec: Codec, key: str
    ) -> tuple[Any, Tally | None] | None:
        """The stored value (a function may return None) and what computing it cost, or None
        on a miss. Raises BackendError."""
        raw = (await read_through(store, [key], self.ttl))[0]
        return None if raw is None else self._load(codec, raw)

    def _load(self, codec: Codec, raw: bytes) -> tuple[Any, Tally | None] | None:
        raw, tally = without_saved(raw)
        try:
            return codec.loads(raw), tally
        except Exception as exc:
            logger.warning(
                "@cached %s: a stored value could not be loaded with %s (%s: %s); computing it "
                "again",
                self.qualname,
                codec.name,
                type(exc).__name__,
                exc,
            )
            return None

    async def _store(
        self,
        store: CacheStore,
        codec: Codec,
        key: str,
        value: Any,
        tags: tuple[str, ...],
        generation: int | None,
        tally: Tally,
    ) -> None:
        raw = self._dump(codec, value)
        if raw is None:
            return
        raw = with_saved(raw, tally)
        # A failed write is counted by the backend; the caller gets the value anyway.
        with contextlib.suppress(BackendError):
            await store.set(key, raw, self.ttl, tags, generation)

    def _dump(self, codec: Codec, value: Any) -> bytes | None:
        """The stored form of ``value``, or None (warned once) when it has none."""
        try:
            return codec.dumps(value)
        except Exception as exc:
            if not self.warned_value:
                self.warned_value = True
                logger.warning(
                    "@cached %s: its result (%s) cannot be stored with the %s serializer (%s: "
                    "%s); it is returned but not cached. %s",
                    self.qualname,
                    type(value).__name__,
                    codec.name,
                    type(exc).__name__,
                    exc,
                    "Return data pickle can store."
                    if codec.name == "pickle"
                    else "Return plain data (dicts, lists, str, numbers), or pass "
                    "serializer='pickle' if you trust every writer.",
                )
            return None
