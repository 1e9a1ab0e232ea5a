"""Cache entries in this process, in a byte-bounded :class:`CacheTable`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from toolkit.backends._cache_table import CacheTable
from toolkit.backends.memory._core import MemoryCore

DEFAULT_MAX_CACHE_BYTES: Final = 64 * 1024 * 1024
"""Bound on the memory backend's cache entries, keys, values and tags counted."""


class MemoryCache(MemoryCore):
    """Entries in :attr:`cache`: an LRU with a time to live per entry, whose least recently
    used go first when its byte bound is reached, and a tag index that lists live entries
    only (the semantics of ``lua/cache_set.lua`` and ``lua/cache_invalidate.lua``)."""

    def _init_cache(self, max_bytes: int) -> None:
        self.cache = CacheTable(max_bytes, self._clock)

    async def cache_get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.cache.get_many(keys)

    async def cache_generation(self) -> int:
        return self.cache.generation()

    async def cache_set_many(
        self,
        items: Sequence[tuple[str, bytes]],
        ttl: float,
        tags: Sequence[str] = (),
        generation: int | None = None,
    ) -> int:
        return self.cache.set_many(items, ttl, tags, generation)

    async def cache_invalidate(self, tags: Sequence[str], *, channel: str) -> int:
        deleted = self.cache.invalidate(tags)
        await self.publish(channel, json.dumps({"tags": list(tags)}))
        return deleted

    def cache_stats(self) -> tuple[int, int]:
        return self.cache.stats()
