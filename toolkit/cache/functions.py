"""``@cached``: memoize a helper (intent classification, retrieval, prompt assembly) in the
app's cache store, with one computation per key across the fleet.

Sits between the application and its slow helpers: the function is called on a miss, its
result stored with aiocache's serializers (JSON by default) and served to every caller of
every instance until it expires or its tags are invalidated. Backend failures never reach the
caller; the function's own exceptions reach it unchanged and are never cached. A sync
function is cached in process (it cannot wait for a backend).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import inspect
import logging
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, ParamSpec, Protocol, TypeVar, cast, get_args, overload

from toolkit._duration import parse_seconds
from toolkit._fallback import computing
from toolkit.cache._current import current_cache, current_caller, current_caller_now
from toolkit.cache._keys import canonical_json
from toolkit.cache._singleflight import SingleFlight
from toolkit.cache._store import CacheStore
from toolkit.errors import BackendError, ConfigurationError
from toolkit.flags import CACHE_FUNCTION, current_store
from toolkit.telemetry import names

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("toolkit.cache")

SerializerName = Literal["json", "msgpack", "pickle"]
SERIALIZERS: Final = get_args(SerializerName)
_AIOCACHE_SERIALIZERS: Final = {
    "json": "JsonSerializer",
    "msgpack": "MsgPackSerializer",
    "pickle": "PickleSerializer",
}
_PICKLE_WARNING: Final = (
    "%s stores values with pickle (serializer='pickle'): whoever can write to the cache "
    "backend can run code in this process. Use it only if you trust every writer; 'json' "
    "and 'msgpack' cannot execute anything."
)
_METHOD_RECEIVERS: Final = ("self", "cls")
_POSITIONAL_OR_KEYWORD: Final = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KEYWORD_ONLY: Final = inspect.Parameter.KEYWORD_ONLY
_EMPTY: Final = inspect.Parameter.empty
_DIGEST_BYTES: Final = 16
MAX_TAGS: Final = 32
"""Tags one entry may be filed under."""
MAX_TAG_LENGTH: Final = 200
"""Characters of one tag: tags are kept per entry and per invalidation, so they are bounded."""

TagSpec = Sequence[str] | Callable[..., Iterable[str]]
"""Fixed tags, or a function of the call's arguments returning them."""


class _Serializer(Protocol):
    """What aiocache's serializers offer (``aiocache.serializers``)."""

    def dumps(self, value: Any) -> str | bytes: ...

    def loads(self, value: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Codec:
    """An aiocache serializer, producing the bytes the store keeps."""

    name: str
    serializer: _Serializer

    def dumps(self, value: Any) -> bytes:
        out = self.serializer.dumps(value)
        return out.encode() if isinstance(out, str) else out

    def loads(self, raw: bytes) -> Any:
        return self.serializer.loads(raw)


@functools.cache
def _codec(name: str) -> _Codec:
    # Imported on first need: aiocache's package import pulls in its redis backend (~80 ms),
    # which `import toolkit` should not pay when no function is cached.
    module = importlib.import_module("aiocache.serializers")
    serializer: _Serializer = getattr(module, _AIOCACHE_SERIALIZERS[name])()
    return _Codec(name, serializer)


_configured: weakref.WeakKeyDictionary[CacheStore, _Codec] = weakref.WeakKeyDictionary()
_flights: weakref.WeakKeyDictionary[CacheStore, SingleFlight[tuple[Any]]] = (
    weakref.WeakKeyDictionary()
)


def _configured_codec(store: CacheStore) -> _Codec:
    """The serializer the store's settings name (``cache.serializer``), once per store."""
    codec = _configured.get(store)
    if codec is None:
        codec = _configured[store] = _codec(store.settings.serializer)
        if codec.name == "pickle":
            logger.warning(_PICKLE_WARNING, "The cache.serializer setting")
    return codec


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


async def read_through(store: CacheStore, keys: Sequence[str], ttl: float) -> list[bytes | None]:
    """``store.get_many(keys)``, keeping in the in-process tier (if any) a copy of what came
    from the backend: copies found in the tier are not renewed, so the tier's time to live
    still bounds how stale they can be. Raises BackendError."""
    local = store.local
    if local is None:
        return await store.get_many(keys)
    values = [local.get(key) for key in keys]
    wanted = [i for i, value in enumerate(values) if value is None]
    if wanted:
        found = await store.get_many([keys[i] for i in wanted])
        for i, value in zip(wanted, found, strict=True):
            if value is not None:
                values[i] = value
                store.remember(keys[i], value, ttl)
    return values


def parse_ttl(ttl: str | float, decorator: str) -> float:
    try:
        seconds = parse_seconds(ttl)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{decorator}(ttl={ttl!r}): {exc}; write ttl='10m'") from exc
    if seconds <= 0:
        raise ConfigurationError(
            f"{decorator}(ttl={ttl!r}): the time to live must be positive, e.g. ttl='10m'"
        )
    return seconds


def parse_tags(tags: Sequence[str], decorator: str) -> tuple[str, ...]:
    problem = tag_problem(tags)
    if problem is not None:
        raise ConfigurationError(f"{decorator}(tags={tags!r}): {problem}, e.g. tags=['intent']")
    return tuple(tags)


def tag_problem(tags: object) -> str | None:
    """What is wrong with ``tags`` as an entry's tags, or None when they are fine."""
    if isinstance(tags, str | bytes) or not isinstance(tags, Sequence):
        return "tags are a list of non-empty strings"
    if len(tags) > MAX_TAGS:
        return f"at most {MAX_TAGS} tags per entry, not {len(tags)}"
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            return "tags are a list of non-empty strings"
        if len(tag) > MAX_TAG_LENGTH:
            return f"a tag has at most {MAX_TAG_LENGTH} characters, not {len(tag)}"
    return None


class CachedDecorator(Protocol):
    """What ``@cached(...)`` returns: it keeps the decorated function's signature, async
    or sync."""

    @overload
    def __call__(
        self, function: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, function: Callable[P, R]) -> Callable[P, R]: ...


def cached(
    *,
    ttl: str | float,
    key: Callable[..., object] | None = None,
    tags: TagSpec = (),
    namespace: str | None = None,
    serializer: SerializerName | None = None,
    per_caller: bool = False,
) -> CachedDecorator:
    """Memoize a function in the app's cache store, across every instance.

        @toolkit.cached(ttl="10m", tags=["intent"])
        async def classify(query: str, *, locale: str = "en") -> dict[str, str]: ...

        @toolkit.cached(ttl="1h", tags=lambda profile_id, **_: [f"profile:{profile_id}"])
        async def summary(profile_id: str) -> str: ...

        await toolkit.cache.invalidate(tags=["profile:42"])   # every instance

    The key is ``{namespace}:{qualified name}:{hash}``, the hash taken over the canonical JSON
    of the bound arguments (defaults applied; ``self`` or ``cls`` left out). An argument that
    is not JSON (a client, a model object) makes the call go straight to the function, counted
    as ``bypass`` and logged once per function; ``key=`` chooses the key material instead. On a
    miss one caller in the whole fleet runs the function, under a lease renewed while it runs
    (``cache.lease``); the others wait (up to ``cache.wait``) and take its stored result. A
    result computed before an invalidation of one of its tags is never stored after it.

    The first caller gets the function's own return value; every later one gets it as stored
    and loaded by the serializer, so under JSON a tuple comes back as a list and an object
    that JSON cannot represent is not stored at all (logged once; use ``serializer="pickle"``,
    or return plain data).

    A sync function (``def``) is cached in this process only, bounded in bytes, with the same
    keys, tags, flag and metrics, and no single flight; to share its results through Redis,
    decorate an async function that runs it in a thread (see docs/caching.md).

    Args:
        ttl: how long a result is served, e.g. ``"10m"`` or seconds (required: only you know
            how fresh it must be).
        key: called with the function's arguments, returns the key material (JSON types):
            ``key=lambda client, query: query``.
        tags: for ``toolkit.cache.invalidate(tags=[...])``: a list, or a function called with
            the call's arguments (as ``key=`` is) returning the list. At most 32 tags of at most
            200 characters; a function that raises or returns anything else makes the call
            go straight to the function (``bypass``, logged once).
        namespace: first part of the key and the ``toolkit.cache.name`` of its metrics; the
            function's module when None.
        serializer: ``"json"``, ``"msgpack"`` or ``"pickle"`` (aiocache's serializers); the
            ``cache.serializer`` setting when None. Pickle runs code from the backend on load:
            only with writers you trust.
        per_caller: put the current request's caller in the key, as the response cache
            finds it (the ``cache.caller`` setting; the ``Authorization`` and ``Cookie``
            values by default), so that each caller has its own entries. Only inside a request
            served by an app with ``toolkit.install()``: elsewhere a call raises
            :class:`~toolkit.errors.NoRequestError`.

    Raises:
        ConfigurationError: at decoration, for an invalid argument.

    The ``cache.function`` flag turns it off (calls go straight to the function) at the next
    call, on every instance. Backend failures fall back to calling the function (``error``).
    """
    seconds = parse_ttl(ttl, "@cached")
    tag_function = tags if callable(tags) else None
    tag_tuple = () if callable(tags) else parse_tags(tags, "@cached")
    if key is not None and not callable(key):
        raise ConfigurationError(
            f"@cached(key={key!r}): key is a function of the arguments returning the key "
            "material, e.g. key=lambda client, query: query"
        )
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise ConfigurationError(
            f"@cached(namespace={namespace!r}): a non-empty string, e.g. namespace='intent'"
        )
    if serializer is not None and serializer not in SERIALIZERS:
        raise ConfigurationError(
            f"@cached(serializer={serializer!r}): one of {', '.join(SERIALIZERS)}"
        )
    if not isinstance(per_caller, bool):
        raise ConfigurationError(f"@cached(per_caller={per_caller!r}): True or False")

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        cache = _FunctionCache(
            function,
            ttl=seconds,
            key=key,
            tags=tag_tuple,
            tag_function=tag_function,
            namespace=namespace,
            codec=None if serializer is None else _codec(serializer),
            per_caller=per_caller,
        )
        if cache.is_async:

            @functools.wraps(function)
            async def cached_call(*args: Any, **kwargs: Any) -> Any:
                return await cache.call(args, kwargs)

            return cached_call

        @functools.wraps(function)
        def cached_sync_call(*args: Any, **kwargs: Any) -> Any:
            return cache.call_sync(args, kwargs)

        return cached_sync_call

    return cast(CachedDecorator, decorate)


class _FunctionCache:
    """Everything about one decorated function that can be known before its first call."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        ttl: float,
        key: Callable[..., object] | None,
        tags: tuple[str, ...],
        tag_function: Callable[..., Iterable[str]] | None,
        namespace: str | None,
        codec: _Codec | None,
        per_caller: bool,
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
        self.is_async = inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
            getattr(function, "__call__", None)  # noqa: B004 - async callable objects
        )
        self.function = function
        self.qualname = qualname
        self.ttl = ttl
        self.key_fn = key
        self.tags = tags
        self.tag_fn = tag_function
        self.per_caller = per_caller
        self.name = namespace or function.__module__
        self.prefix = f"{self.name}:{qualname}:"
        self.codec = codec
        if codec is not None and codec.name == "pickle":
            logger.warning(_PICKLE_WARNING, f"@cached {qualname}")
        self.signature = inspect.signature(function)
        parameters = list(self.signature.parameters.values())
        self.receiver = (
            parameters[0].name if parameters and parameters[0].name in _METHOD_RECEIVERS else None
        )
        # Signature.bind costs more than the rest of a hit together; for the usual signatures
        # (named parameters only) the arguments are matched here, and bind is the fallback.
        simple = all(p.kind in (_POSITIONAL_OR_KEYWORD, _KEYWORD_ONLY) for p in parameters)
        self.positional = (
            tuple(p.name for p in parameters if p.kind is _POSITIONAL_OR_KEYWORD)
            if simple
            else None
        )
        self.names = frozenset(p.name for p in parameters)
        self.defaults = {p.name: p.default for p in parameters if p.default is not _EMPTY}
        self.warned_key = False
        self.warned_tags = False
        self.warned_value = False

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        store = current_cache()
        if not current_store().is_enabled(CACHE_FUNCTION):
            store.record(self.name, names.CACHE_BYPASS)
            return await self.function(*args, **kwargs)
        caller = await current_caller(store, self.qualname) if self.per_caller else None
        entry = self._entry(args, kwargs, caller)
        if entry is None:
            store.record(self.name, names.CACHE_BYPASS)
            return await self.function(*args, **kwargs)
        codec = self.codec or _configured_codec(store)
        key = self._key(codec, entry[0])
        tags = entry[1]
        try:
            found = await self._lookup(store, codec, key)
        except BackendError:
            store.record(self.name, names.CACHE_ERROR, key)
            return await self.function(*args, **kwargs)
        if found is not None:
            store.record(self.name, names.CACHE_HIT, key)
            return found[0]

        result = names.CACHE_MISS

        async def lookup() -> tuple[Any] | None:
            nonlocal result
            try:
                found = await self._lookup(store, codec, key)
            except BackendError:
                return None  # keep waiting: the leader may still store it
            if found is not None:
                result = names.CACHE_HIT
            return found

        async def compute() -> tuple[Any]:
            # Under tags, read the invalidation clock before anything the function reads:
            # its write is refused if one of them is invalidated while it runs.
            generation = await _generation(store) if tags else None
            with computing() as computation:
                value = await self.function(*args, **kwargs)
            # A fallback's answer is not kept (see _fallback); nor is a tagged value without
            # its invalidation clock, which could outlive an invalidation it never saw.
            if not computation.fallback and (generation is not None or not tags):
                await self._store(store, codec, key, value, tags, generation)
            return (value,)

        try:
            return (await _flight(store).run(key, lookup, compute))[0]
        finally:
            store.record(self.name, result, key)

    def call_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A sync function's call: its entries live in this process (``sync_entries``)."""
        store = current_cache()
        if not current_store().is_enabled(CACHE_FUNCTION):
            store.record(self.name, names.CACHE_BYPASS)
            return self.function(*args, **kwargs)
        caller = current_caller_now(store, self.qualname) if self.per_caller else None
        entry = self._entry(args, kwargs, caller)
        if entry is None:
            store.record(self.name, names.CACHE_BYPASS)
            return self.function(*args, **kwargs)
        codec = self.codec or _configured_codec(store)
        key = self._key(codec, entry[0])
        table = store.sync_entries
        raw = table.get_many([key])[0]
        found = None if raw is None else self._load(codec, raw)
        if found is not None:
            store.record(self.name, names.CACHE_HIT, key)
            return found[0]
        store.record(self.name, names.CACHE_MISS, key)
        generation = table.generation()
        value = self.function(*args, **kwargs)
        stored = self._dump(codec, value)
        if stored is not None:
            table.set_many([(key, stored)], self.ttl, entry[1], generation)
        return value

    def _entry(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], caller: str | None
    ) -> tuple[bytes, tuple[str, ...]] | None:
        """The key material (the caller's identity included) and the tags of this call, or
        None to bypass the cache."""
        if self.per_caller and caller is None:
            return None  # the identity function failed: never share an entry by accident
        material = self._material(args, kwargs)
        if material is None:
            return None
        tags = self.tags if self.tag_fn is None else self._computed_tags(self.tag_fn, args, kwargs)
        if tags is None:
            return None
        if caller is not None:
            material += b"\x00" + caller.encode("utf-8", "surrogatepass")
        return material, tags

    def _key(self, codec: _Codec, material: bytes) -> str:
        # The serializer is part of the hash: entries written by another serializer (another
        # deployment, a changed setting) are never read as this one's.
        digest = hashlib.blake2b(codec.name.encode(), digest_size=_DIGEST_BYTES)
        digest.update(b"\x00")
        digest.update(material)
        return self.prefix + digest.hexdigest()

    def _computed_tags(
        self,
        tag_fn: Callable[..., Iterable[str]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[str, ...] | None:
        try:
            computed = tag_fn(*args, **kwargs)
            tags = list(computed) if not isinstance(computed, str | bytes) else computed
        except Exception as exc:
            self._warn_tags(f"tags= raised {type(exc).__name__}: {exc}")
            return None
        problem = tag_problem(tags)
        if problem is not None:
            self._warn_tags(f"tags= returned {tags!r:.200}: {problem}")
            return None
        return tuple(tags)

    def _material(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes | None:
        """The canonical bytes that select the result, or None to bypass the cache."""
        if self.key_fn is not None:
            try:
                chosen = self.key_fn(*args, **kwargs)
            except Exception as exc:
                self._warn_key(f"key= raised {type(exc).__name__}: {exc}")
                return None
            try:
                return canonical_json(chosen)
            except (TypeError, ValueError):
                self._warn_key(
                    f"key= returned a {type(chosen).__name__}, which is not JSON (str, int, "
                    "float, bool, None, lists and dicts of them)"
                )
                return None
        arguments = self._arguments(args, kwargs)
        if arguments is None:
            return None  # a wrong call: the function raises the TypeError itself
        if self.receiver is not None:
            del arguments[self.receiver]
        try:
            return canonical_json(arguments)
        except (TypeError, ValueError):
            if not self.warned_key:
                self._warn_key(self._explain(arguments))
            return None

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """Parameter name -> value, defaults applied (the order is irrelevant: the canonical
        JSON sorts it); None for a call the function would refuse."""
        positional = self.positional
        if positional is not None and len(args) <= len(positional):
            arguments = {**self.defaults, **dict(zip(positional, args, strict=False))}
            for name, value in kwargs.items():
                if name not in self.names or name in positional[: len(args)]:
                    break  # unknown or given twice: let bind() decide
                arguments[name] = value
            else:
                if len(arguments) == len(self.names):
                    return arguments
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        return dict(bound.arguments)

    def _explain(self, arguments: dict[str, Any]) -> str:
        keyable, offending = [], []
        for name, value in arguments.items():
            try:
                canonical_json(value)
            except (TypeError, ValueError):
                offending.append(f"{name!r} ({type(value).__name__})")
            else:
                keyable.append(name)
        parameters = [
            p.replace(annotation=inspect.Parameter.empty)
            for p in self.signature.parameters.values()
        ]
        accepted = str(
            self.signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty)
        )[1:-1]
        body = keyable[0] if len(keyable) == 1 else f"[{', '.join(keyable)}]"
        return (
            f"argument {', '.join(offending)} cannot be part of a cache key (not JSON: str, "
            f"int, float, bool, None, lists and dicts of them). Choose the key material: "
            f"@cached(..., key=lambda {accepted}: {body})"
        )

    def _warn_key(self, reason: str) -> None:
        if not self.warned_key:
            self.warned_key = True
            logger.warning(
                "@cached %s: %s; until then its calls go straight to the function "
                "(toolkit.cache.requests result=bypass)",
                self.qualname,
                reason,
            )

    def _warn_tags(self, reason: str) -> None:
        if not self.warned_tags:
            self.warned_tags = True
            logger.warning(
                "@cached %s: %s; such calls go straight to the function "
                "(toolkit.cache.requests result=bypass)",
                self.qualname,
                reason,
            )

    async def _lookup(self, store: CacheStore, codec: _Codec, key: str) -> tuple[Any] | None:
        """The stored value in a 1-tuple (a function may return None), or None on a miss.
        Raises BackendError."""
        raw = (await read_through(store, [key], self.ttl))[0]
        return None if raw is None else self._load(codec, raw)

    def _load(self, codec: _Codec, raw: bytes) -> tuple[Any] | None:
        try:
            return (codec.loads(raw),)
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
        codec: _Codec,
        key: str,
        value: Any,
        tags: tuple[str, ...],
        generation: int | None,
    ) -> None:
        raw = self._dump(codec, value)
        if raw is None:
            return
        # A failed write is counted by the backend; the caller gets the value anyway.
        with contextlib.suppress(BackendError):
            await store.set(key, raw, self.ttl, tags, generation)

    def _dump(self, codec: _Codec, value: Any) -> bytes | None:
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


async def _generation(store: CacheStore) -> int | None:
    """The invalidation clock, or None when the backend cannot tell (then nothing tagged is
    stored: it could not be told apart from a value computed before an invalidation)."""
    try:
        return await store.generation()
    except BackendError:
        return None
