"""``@cached``: memoize a helper (intent classification, retrieval, prompt assembly) in the
app's cache store, with one computation per key across the fleet.

Sits between the application and its slow helpers: the function is called on a miss, its
result stored with aiocache's serializers (JSON by default) and served to every caller of
every instance until it expires or its tags are invalidated. Backend failures never reach the
caller; the function's own exceptions reach it unchanged and are never cached. A sync
function is cached in process (it cannot wait for a backend).

This module holds the decorator; the rest is in rooms of its own: the calls (async and sync
paths) in ``_function_cache``, streams in ``_function_stream``, the key material in
``_function_key``, the serializers in ``_codec``, and what ``@cache_embeddings`` shares with
it in ``_arguments`` and ``_reads``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar, cast, overload

from toolkit._default import DEFAULT, Default
from toolkit._deprecated import warn_renamed
from toolkit.cache._arguments import MAX_TAG_LENGTH, MAX_TAGS, parse_tags, parse_ttl, tag_problem
from toolkit.cache._codec import SERIALIZERS, SerializerName, codec, load_serializers
from toolkit.cache._function_cache import FunctionCache
from toolkit.cache._function_stream import stream_wrapper
from toolkit.cache._reads import read_through
from toolkit.errors import ConfigurationError
from toolkit.flags import FlagSource

__all__ = [
    "MAX_TAGS",
    "MAX_TAG_LENGTH",
    "SERIALIZERS",
    "CachedDecorator",
    "SerializerName",
    "TagSpec",
    "cached",
    "parse_tags",
    "parse_ttl",
    "read_through",
    "tag_problem",
]

P = ParamSpec("P")
R = TypeVar("R")

TagSpec = Sequence[str] | Callable[..., Iterable[str]]
"""Fixed tags, or a function of the call's arguments returning them."""


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
    serializer: SerializerName | Default = DEFAULT,
    per_caller: bool = False,
    flags: FlagSource | None = None,
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
    waiting caller that the current deadline cuts raises
    :class:`~toolkit.errors.DeadlineExceeded` instead of calling the function. A
    result computed before an invalidation of one of its tags is never stored after it.

    The first caller gets the function's own return value; every later one gets it as stored
    and loaded by the serializer, so under JSON a tuple comes back as a list and an object
    that JSON cannot represent is not stored at all (logged once; use ``serializer="pickle"``,
    or return plain data).

    An async generator function (a stream) has its chunks stored once the stream ended
    normally, within ``cache.max_body_bytes``, and replayed with the same chunking; a
    stream that fails or is closed early stores nothing, and concurrent misses each stream
    from the function (no single flight: see docs/pipelines.md, Streams).

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
            ``cache.serializer`` setting by default. Pickle runs code from the backend on load:
            only with writers you trust.
        per_caller: put the current request's caller in the key, as the response cache
            finds it (the ``cache.caller`` setting; the ``Authorization`` and ``Cookie``
            values by default), so that each caller has its own entries. Only inside a request
            served by an app with ``toolkit.install()``: elsewhere a call raises
            :class:`~toolkit.errors.NoRequestError`.
        flags: where the ``cache.function`` flag is read, at every call; the current store
            when None.

    Raises:
        ConfigurationError: at decoration, for an invalid argument or a sync generator
            function (make it an async generator function, or return a list).
        DeadlineExceeded: at a call, when the current deadline passed while it waited for
            another caller's computation of its key (counted ``wait_deadline``).

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
    if serializer is None:  # the old spelling of "the setting"
        warn_renamed("@cached(serializer=None)", "serializer=toolkit.DEFAULT, or leave it out")
        serializer = DEFAULT
    if serializer is not DEFAULT and serializer not in SERIALIZERS:
        raise ConfigurationError(
            f"@cached(serializer={serializer!r}): one of {', '.join(SERIALIZERS)}"
        )
    if not isinstance(per_caller, bool):
        raise ConfigurationError(f"@cached(per_caller={per_caller!r}): True or False")

    load_serializers()  # here, not on the event loop at the first call

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        cache = FunctionCache(
            function,
            ttl=seconds,
            key=key,
            tags=tag_tuple,
            tag_function=tag_function,
            namespace=namespace,
            codec=None if serializer is DEFAULT else codec(serializer),
            per_caller=per_caller,
            flags=flags,
        )
        if cache.is_stream:
            return functools.wraps(function)(stream_wrapper(cache))
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
