"""The embedded backend: state in this process's memory, for a single instance."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from opentelemetry import metrics

from toolkit.backends._breaker import BreakerConfig, BreakerTable, BreakerView, breaker_message
from toolkit.backends._cache_table import CacheTable
from toolkit.backends._gcra import MICROSECONDS, GcraLimit, GcraResult
from toolkit.backends.base import (
    BREAKER_CHANNEL,
    CACHE_CHANNEL,
    FLAG_HISTORY_LENGTH,
    FLAGS_CHANNEL,
    Backend,
)

if TYPE_CHECKING:
    from limits.aio.storage import Storage

T = TypeVar("T")

_MIN_SWEEP_SIZE = 1024
DEFAULT_MAX_CACHE_BYTES = 64 * 1024 * 1024


class MemoryBackend(Backend):
    """State in a dict in this process. Operations run without awaiting, so each is atomic
    under asyncio; nothing can fail, so the call guard adds nothing.

    Cache entries live in a :class:`~toolkit.backends._cache_table.CacheTable`: an LRU with a
    time to live per entry, whose least recently used go first when ``max_cache_bytes`` is
    reached (keys, values and tags counted), and a tag index that lists live entries only.

    Args:
        clock: seconds from a monotonic clock; tests pass a fake one.
        max_cache_bytes: bound on the cache entries' total size.
    """

    name: ClassVar[str] = "memory"
    in_process: ClassVar[bool] = True

    def __init__(
        self,
        *,
        timeout: float = 0.1,
        key_prefix: str = "toolkit",
        meter_provider: metrics.MeterProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
    ) -> None:
        super().__init__(timeout=timeout, key_prefix=key_prefix, meter_provider=meter_provider)
        self._clock = clock
        self._tats: dict[str, int] = {}
        self._sweep_at = _MIN_SWEEP_SIZE
        self._limits_storage: Storage | None = None
        self._flags: dict[str, str] = {}
        self._history: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=FLAG_HISTORY_LENGTH
        )
        self._listeners: dict[str, set[asyncio.Queue[str]]] = {}
        self._declared: dict[str, str] = {}
        self.cache = CacheTable(max_cache_bytes, clock)
        self._leases: dict[str, tuple[str, float]] = {}
        self._breakers = BreakerTable()

    async def gcra(self, keys: Sequence[str], limits: Sequence[GcraLimit], cost: int) -> GcraResult:
        # Step for step the arithmetic of lua/gcra.lua, in plain loops: this runs on every
        # request, and nothing in it awaits, so it is atomic under asyncio.
        now = int(self._clock() * MICROSECONDS)
        tats = self._tats
        allowed = True
        retry_after = 0
        plan = []
        for key, limit in zip(keys, limits, strict=True):
            full_key = f"{self.key_prefix}:{key}"
            tat = tats.get(full_key, now)
            if tat < now:
                tat = now
            new_tat = tat + cost * limit.interval_us
            if new_tat - now > limit.period_us:
                allowed = False
                retry_after = max(retry_after, new_tat - limit.period_us - now)
            plan.append((full_key, tat, new_tat, limit))
        remaining = []
        reset_after = []
        for full_key, tat, new_tat, limit in plan:
            if allowed:
                tat = tats[full_key] = new_tat
            remaining.append(max(0, (limit.period_us - (tat - now)) // limit.interval_us))
            reset_after.append((tat - now) / MICROSECONDS)
        if allowed and len(tats) >= self._sweep_at:
            self._sweep(now)
        return GcraResult(allowed, retry_after / MICROSECONDS, tuple(remaining), tuple(reset_after))

    def _sweep(self, now: int) -> None:
        # A TAT in the past carries no state; dropping them keeps memory bounded by the keys
        # active within one period. Sweeping at doubling sizes keeps the cost O(1) amortised.
        self._tats = {k: tat for k, tat in self._tats.items() if tat > now}
        self._sweep_at = max(_MIN_SWEEP_SIZE, 2 * len(self._tats))

    async def flags_load(self) -> dict[str, str]:
        return dict(self._flags)

    async def flags_save(self, key: str, state: str | None, change: dict[str, Any]) -> None:
        old = self._flags.pop(key, None) if state is None else self._flags.get(key)
        if state is not None:
            self._flags[key] = state
        record = {**change, "at": time.time()}
        if old is not None:
            record["old"] = json.loads(old)
        self._history.appendleft(record)
        await self.publish(FLAGS_CHANNEL, key)

    async def flags_history(self, limit: int) -> list[dict[str, Any]]:
        return list(itertools.islice(self._history, limit))

    async def flags_declare(self, definitions: dict[str, str]) -> None:
        self._declared.update(definitions)

    async def flags_declared(self) -> dict[str, str]:
        return dict(self._declared)

    async def subscribe(self, channel: str) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        listeners = self._listeners.setdefault(channel, set())
        listeners.add(queue)
        try:
            yield ""
            while True:
                yield await queue.get()
        finally:
            listeners.discard(queue)

    async def publish(self, channel: str, message: str) -> None:
        for listener in self._listeners.get(channel, ()):
            listener.put_nowait(message)

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

    async def cache_invalidate(self, tags: Sequence[str]) -> int:
        deleted = self.cache.invalidate(tags)
        await self.publish(CACHE_CHANNEL, json.dumps({"tags": list(tags)}))
        return deleted

    def cache_stats(self) -> tuple[int, int]:
        return self.cache.stats()

    async def lease_acquire(self, key: str, token: str, ttl: float) -> bool:
        held = self._leases.get(key)
        if held is not None and held[1] > self._clock():
            return False
        self._leases[key] = (token, self._clock() + ttl)
        return True

    async def lease_renew(self, key: str, token: str, ttl: float) -> bool:
        held = self._leases.get(key)
        if held is None or held[0] != token or held[1] <= self._clock():
            return False
        self._leases[key] = (token, self._clock() + ttl)
        return True

    async def lease_release(self, key: str, token: str) -> None:
        held = self._leases.get(key)
        if held is not None and held[0] == token:
            del self._leases[key]

    async def lease_held(self, key: str) -> bool:
        held = self._leases.get(key)
        return held is not None and held[1] > self._clock()

    async def breaker_record(
        self,
        name: str,
        now_ms: int,
        successes: int,
        failures: int,
        slow: int,
        trip: bool,
        config: BreakerConfig,
    ) -> BreakerView:
        before = self._breakers.read(name).generation
        view = self._breakers.record(name, now_ms, successes, failures, slow, trip, config)
        return await self._announce(name, before, view)

    async def breaker_acquire_probe(
        self, name: str, now_ms: int, token: str, config: BreakerConfig
    ) -> BreakerView:
        before = self._breakers.read(name).generation
        view = self._breakers.acquire_probe(name, now_ms, token, config)
        return await self._announce(name, before, view)

    async def breaker_release_probe(
        self,
        name: str,
        now_ms: int,
        token: str,
        generation: int,
        outcome: str,
        config: BreakerConfig,
    ) -> BreakerView:
        before = self._breakers.read(name).generation
        view = self._breakers.release_probe(name, now_ms, token, generation, outcome, config)
        return await self._announce(name, before, view)

    async def breaker_force(self, name: str, forced: str) -> BreakerView:
        return await self._announce(name, -1, self._breakers.force(name, forced))

    async def breaker_read(self, name: str) -> BreakerView:
        return self._breakers.read(name)

    async def _announce(self, name: str, before: int, view: BreakerView) -> BreakerView:
        if view.generation != before:
            await self.publish(BREAKER_CHANNEL, breaker_message(name, view))
        return view

    def limits_storage(self) -> Storage:
        if self._limits_storage is None:
            from limits.aio.storage import MemoryStorage

            self._limits_storage = MemoryStorage()
        return self._limits_storage

    async def call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        del operation
        return await fn()
