"""Reads the caches share beyond a plain get: through the in-process tier for the
decorators, and the invalidation clock read before computing a value to store under tags."""

from __future__ import annotations

from collections.abc import Sequence

from toolkit.cache._store import CacheStore
from toolkit.errors import BackendError


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


async def generation_or_none(store: CacheStore) -> int | None:
    """The invalidation clock, or None when the backend cannot tell (counted and traced by
    the backend; then nothing tagged is stored: it could not be told apart from a value
    computed before an invalidation)."""
    try:
        return await store.generation()
    except BackendError:
        return None
