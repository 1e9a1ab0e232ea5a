"""Cache entries in this process: values, their tag index and the invalidation clock, all
bounded in bytes. The memory backend keeps its entries in one; the cache store keeps the
entries of sync functions in another.

The same semantics as ``lua/cache_set.lua`` and ``lua/cache_invalidate.lua``: a write made
with the clock read before a computation is refused when one of its tags was invalidated
since, and the table of invalidated tags is bounded by forgetting the oldest into a floor
(a write older than the floor is refused: never a stale store, at worst a spurious miss).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Final, NamedTuple

from cachetools import Cache, TLRUCache

ENTRY_OVERHEAD: Final = 480
"""Bytes counted per entry beyond the lengths of its key, value and tags: the key and value
objects, the entry tuple and the LRU's, expiry heap's and size table's bookkeeping (measured
with tracemalloc on CPython 3.11: about 390)."""
TAG_OVERHEAD: Final = 250
"""Bytes counted per tag of an entry: the tag's string, its set in the tag index when no
other entry has the tag, and the entry's slot in it (measured: about 290 for a tag of one
entry, 60 for a shared one)."""
MAX_INVALIDATED_TAGS: Final = 10_000
"""Invalidated tags whose clock is remembered; older ones are folded into the floor."""


class _Entry(NamedTuple):
    value: bytes
    expires: float
    tags: tuple[str, ...]
    size: int


class _Entries(TLRUCache[str, _Entry]):
    """Entries by key, least recently used first out, each with its own expiry; tells the
    table about every entry that leaves (evicted, expired, deleted) to unlink its tags."""

    def __init__(
        self,
        max_bytes: int,
        clock: Callable[[], float],
        on_remove: Callable[[str, tuple[str, ...]], None],
    ) -> None:
        super().__init__(
            maxsize=max_bytes,
            ttu=lambda key, entry, now: entry.expires,
            timer=clock,
            getsizeof=lambda entry: entry.size,
        )
        self._on_remove = on_remove
        self.evictions = 0

    def popitem(self) -> tuple[str, _Entry]:
        self.evictions += 1  # called only to make room
        return super().popitem()

    def __delitem__(self, key: str) -> None:
        entry = Cache.__getitem__(self, key)
        try:
            super().__delitem__(key)
        finally:
            self._on_remove(key, entry.tags)

    def expire(self, time: float | None = None) -> list[tuple[str, _Entry]]:
        expired: list[tuple[str, _Entry]] = list(super().expire(time))
        for key, entry in expired:
            self._on_remove(key, entry.tags)
        return expired

    def peek(self, key: str) -> _Entry | None:
        """The entry stored under ``key``, expired or not, without touching its recency."""
        try:
            entry: _Entry = Cache.__getitem__(self, key)
        except KeyError:
            return None
        return entry


class CacheTable:
    """Cache entries bounded in bytes (key, value and tags counted), a tag index holding only
    entries that are still there, and an invalidation clock. Thread-safe: sync functions run
    in worker threads while invalidations run on the event loop.

    Args:
        max_bytes: bound on the entries' total size.
        clock: seconds from a monotonic clock.
        max_invalidated_tags: invalidated tags whose clock is remembered one by one.
    """

    def __init__(
        self,
        max_bytes: int,
        clock: Callable[[], float],
        *,
        max_invalidated_tags: int = MAX_INVALIDATED_TAGS,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._entries = _Entries(max_bytes, clock, self._unlink)
        self._tagged: dict[str, set[str]] = {}
        self._invalidated: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._max_invalidated = max_invalidated_tags
        self._floor = 0
        self._generation = 0

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        with self._lock:
            entries = self._entries
            values: list[bytes | None] = []
            for key in keys:
                entry = entries.get(key)
                values.append(None if entry is None else entry.value)
            return values

    def generation(self) -> int:
        """The invalidation clock: a write made with it is refused if one of its tags is
        invalidated after this call."""
        with self._lock:
            return self._generation

    def set_many(
        self,
        items: Sequence[tuple[str, bytes]],
        ttl: float,
        tags: Sequence[str] = (),
        generation: int | None = None,
    ) -> int:
        """Store the items under ``tags`` for ``ttl`` seconds, unless ``generation`` is given
        and a tag was invalidated after it was read; returns how many were stored."""
        tags = tuple(tags)
        with self._lock:
            if tags and generation is not None and self._invalidated_since(tags, generation):
                return 0
            entries = self._entries
            expires = self._clock() + ttl
            tag_bytes = sum(len(tag) + TAG_OVERHEAD for tag in tags)
            stored = 0
            for key, value in items:
                size = len(key) + len(value) + tag_bytes + ENTRY_OVERHEAD
                if size > entries.maxsize:
                    continue  # larger than the whole cache: never stored
                previous = entries.peek(key)
                if previous is not None:
                    self._unlink(key, previous.tags)
                entries[key] = _Entry(value, expires, tags, size)
                for tag in tags:
                    self._tagged.setdefault(tag, set()).add(key)
                stored += 1
            return stored

    def invalidate(self, tags: Iterable[str]) -> int:
        """Delete every entry under any of ``tags`` and advance the clock past them; returns
        how many entries were deleted."""
        with self._lock:
            self._generation += 1
            invalidated = self._invalidated
            deleted = 0
            for tag in tags:
                invalidated[tag] = self._generation
                invalidated.move_to_end(tag)
                for key in self._tagged.pop(tag, ()):
                    if self._entries.pop(key, None) is not None:
                        deleted += 1
            while len(invalidated) > self._max_invalidated:
                _, forgotten = invalidated.popitem(last=False)
                self._floor = max(self._floor, forgotten)
            return deleted

    def clear(self) -> None:
        """Drop every entry (the clock and the invalidated tags stay)."""
        with self._lock:
            self._entries.clear()
            self._tagged.clear()

    def stats(self) -> tuple[int, int]:
        """``(entries, evictions so far)``."""
        with self._lock:
            return len(self._entries), self._entries.evictions

    def tag_index_size(self) -> int:
        """Keys listed in the tag index, all tags together (each live entry once per tag)."""
        with self._lock:
            self._entries.expire()
            return sum(len(keys) for keys in self._tagged.values())

    def _invalidated_since(self, tags: tuple[str, ...], generation: int) -> bool:
        if self._floor > generation:
            return True
        invalidated = self._invalidated
        return any(invalidated.get(tag, 0) > generation for tag in tags)

    def _unlink(self, key: str, tags: tuple[str, ...]) -> None:
        tagged = self._tagged
        for tag in tags:
            keys = tagged.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del tagged[tag]
