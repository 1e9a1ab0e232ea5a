"""What the decorators use: the store install() set up (else an in-process one), and the
caller of the request being served; ``invalidate()``, which reaches that store."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Scope

from toolkit._current import Current
from toolkit.backends import MemoryBackend
from toolkit.cache._store import CacheStore
from toolkit.errors import ConfigurationError, NoRequestError
from toolkit.flags._store import REQUEST

INSTALLED: Current[CacheStore] = Current(lambda: CacheStore(MemoryBackend()))
"""The store ``install()`` set up last, else an in-process one."""


def current_cache() -> CacheStore:
    """The store ``install()`` set up last, else an in-process one (created on first use), so
    decorated functions work before, and without, ``install()``."""
    return INSTALLED.get()


def set_current_cache(store: CacheStore | None) -> None:
    """Make ``store`` the one the decorators and ``invalidate()`` use (``install()`` does)."""
    INSTALLED.set(store)


async def invalidate(*, tags: Iterable[str]) -> int:
    """Delete every cached entry (response, function or embedding) filed under any of
    ``tags``, on every instance; returns how many. Raises BackendError when the backend
    fails (nothing may have been deleted)."""
    return await current_cache().invalidate(tags)


async def current_caller(store: CacheStore, function: str) -> str | None:
    """The identity of the current request's caller, as the response cache resolves it
    (``store.caller``); None when its caller function failed.

    The request is the one the flag context pinned (the outermost middleware of
    ``install()``), which every task and thread started inside it inherits.

    Raises:
        NoRequestError: no request is being served here.
    """
    caller = store.caller
    scope = _scope(function)
    return await caller(scope) if caller.is_async else caller.resolve(scope)


def current_caller_now(store: CacheStore, function: str) -> str | None:
    """:func:`current_caller` without awaiting, for sync functions.

    Raises:
        NoRequestError: no request is being served here.
        ConfigurationError: the response cache's caller function is async.
    """
    scope = _scope(function)
    caller = store.caller
    if caller.is_async:
        raise ConfigurationError(
            f"@cached(per_caller=True) {function} is a sync function, and the response "
            "cache's caller function is async: make the function async, or the caller "
            "function sync"
        )
    return caller.resolve(scope)


def _scope(function: str) -> Scope:
    request = REQUEST.get()
    if request is None:
        raise NoRequestError(
            f"@cached(per_caller=True) {function} was called outside a request, so it has no "
            "caller: call it while a request is served by an app with toolkit.install() (its "
            "tasks and threads included), or pass the caller as an argument and drop "
            "per_caller"
        )
    return request.scope
