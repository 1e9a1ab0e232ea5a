"""Cache entries on Redis: one shard off a cluster, 16 ``{hash tags}`` on one, so that every
cache script (``lua/cache_*.lua``) touches one slot."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, Final

from toolkit.backends._cache_table import MAX_INVALIDATED_TAGS
from toolkit.backends.redis._core import RedisCore

CLUSTER_CACHE_SHARDS: Final = 16
"""On a cluster, cache entries are spread over this many {hash tags}, each with its own tag
indexes and invalidated tags, so that every cache script touches one slot."""


class RedisCache(RedisCore):
    """Entries as strings with a time to live, a sorted set per tag (the index), the
    invalidated tags and their floor per shard, and one invalidation clock."""

    _cache_stats: tuple[int, int] | None = None

    def _init_cache(self) -> None:
        self._cache_scripts = {
            op: self._script(f"cache_{op}") for op in ("set", "invalidate", "clock")
        }
        self._cache_shards = CLUSTER_CACHE_SHARDS if self._cluster else 1
        self._clock_key = self.key("cache", "clock")
        self._db = 0 if self._pool is None else int(self._pool.connection_kwargs.get("db", 0))

    def _shard(self, key: str) -> int:
        return zlib.crc32(key.encode("utf-8", "surrogatepass")) % self._cache_shards

    def _in_shard(self, shard: int, *parts: str) -> str:
        if self._cluster:
            return self.key("{cache" + str(shard) + "}", *parts)
        return self.key(*parts)

    def _entry_key(self, key: str) -> str:
        return self._in_shard(self._shard(key), key)

    def _shard_keys(self, shard: int, tags: Sequence[str]) -> list[str]:
        """The shard's invalidated tags, its floor, then the index of each tag."""
        return [
            self._in_shard(shard, "cache", "invalidated"),
            self._in_shard(shard, "cache", "floor"),
            *(self._in_shard(shard, "cache", "tagged", tag) for tag in tags),
        ]

    async def cache_get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        full = [self._entry_key(k) for k in keys]
        if len(full) == 1:
            value = await self.call("cache.get", lambda: self._client.get(full[0]))
            return [value]
        # MGET needs one slot; on a cluster, a pipeline splits the keys by node instead.
        if self._cluster:
            return await self.call("cache.get", lambda: self._pipelined(("GET", k) for k in full))
        values: list[bytes | None] = await self.call("cache.get", lambda: self._client.mget(full))
        return values

    async def cache_generation(self) -> int:
        value = await self.call("cache.generation", lambda: self._client.get(self._clock_key))
        return int(value or 0)

    async def cache_set_many(
        self,
        items: Sequence[tuple[str, bytes]],
        ttl: float,
        tags: Sequence[str] = (),
        generation: int | None = None,
    ) -> int:
        ttl_ms = max(1, round(ttl * 1000))
        shards: dict[int, list[tuple[str, bytes]]] = {}
        for key, value in items:
            shards.setdefault(self._shard(key), []).append((key, value))
        script = self._cache_scripts["set"]
        read = -1 if generation is None else generation

        async def store(shard: int, group: list[tuple[str, bytes]]) -> int:
            index = self._shard_keys(shard, tags)
            keys = [*index[:2], *(self._in_shard(shard, k) for k, _ in group), *index[2:]]
            args: list[bytes | str | int] = [
                read,
                ttl_ms,
                len(group),
                *(v for _, v in group),
                *tags,
            ]
            stored = await self.call("cache.set", lambda: script(keys=keys, args=args))
            return int(stored)

        counts = await asyncio.gather(*(store(s, group) for s, group in shards.items()))
        return sum(counts)

    async def cache_invalidate(self, tags: Sequence[str], *, channel: str) -> int:
        clock_script, script = self._cache_scripts["clock"], self._cache_scripts["invalidate"]
        # The clock first: a write that reads it from here on is newer than this invalidation,
        # and one that read it before is refused by every shard, before or after its deletion.
        clock = await self.call(
            "cache.invalidate", lambda: clock_script(keys=[self._clock_key], args=[])
        )
        args = [clock, MAX_INVALIDATED_TAGS, *tags]

        async def invalidate(shard: int) -> int:
            keys = self._shard_keys(shard, tags)
            return int(await self.call("cache.invalidate", lambda: script(keys=keys, args=args)))

        counts = await asyncio.gather(*(invalidate(s) for s in range(self._cache_shards)))
        await self.publish(channel, json.dumps({"tags": list(tags)}))
        return sum(counts)

    def cache_stats(self) -> tuple[int, int] | None:
        return self._cache_stats

    async def refresh_cache_stats(self) -> None:
        """Redis's own counts, from INFO: keys in the toolkit's database (summed over the
        primaries of a cluster) and keys Redis evicted under ``maxmemory``. They cover the
        whole database, so a Redis shared with other data reports that data too."""

        async def read() -> tuple[int, int]:
            if self._cluster:
                keyspaces = await self._client.info("keyspace", target_nodes="primaries")
                stats = await self._client.info("stats", target_nodes="primaries")
                return (
                    sum(_keys_in(info, 0) for info in keyspaces.values()),
                    sum(int(info.get("evicted_keys", 0)) for info in stats.values()),
                )
            keyspace = await self._client.info("keyspace")
            stats = await self._client.info("stats")
            return _keys_in(keyspace, self._db), int(stats.get("evicted_keys", 0))

        self._cache_stats = await self.call("cache.stats", read)

    async def _pipelined(self, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
        pipeline = self._client.pipeline(transaction=False)
        for command in commands:
            pipeline.execute_command(*command)
        replies: list[Any] = await pipeline.execute()
        return replies


def _keys_in(keyspace: dict[str, Any], db: int) -> int:
    """Keys of database ``db`` in an INFO keyspace reply (``db0: {"keys": 12, ...}``); none
    when the database is empty (INFO then leaves it out)."""
    entry = keyspace.get(f"db{db}")
    return int(entry.get("keys", 0)) if isinstance(entry, dict) else 0
