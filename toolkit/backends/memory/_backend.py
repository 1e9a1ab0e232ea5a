"""MemoryBackend: the capability mixins of this package composed into one backend."""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry import metrics

from toolkit.backends.base import Backend
from toolkit.backends.memory._breakers import MemoryBreakers
from toolkit.backends.memory._cache import DEFAULT_MAX_CACHE_BYTES, MemoryCache
from toolkit.backends.memory._flags import MemoryFlags
from toolkit.backends.memory._leases import MemoryLeases
from toolkit.backends.memory._ratelimit import MemoryRateLimits


class MemoryBackend(
    MemoryRateLimits, MemoryCache, MemoryLeases, MemoryBreakers, MemoryFlags, Backend
):
    """State in dicts in this process. Operations run without awaiting, so each is atomic
    under asyncio; nothing can fail, so the call guard adds nothing.

    Cache entries live in a :class:`~toolkit.backends._cache_table.CacheTable`: an LRU with a
    time to live per entry, whose least recently used go first when ``max_cache_bytes`` is
    reached (keys, values and tags counted), and a tag index that lists live entries only.

    Args:
        clock: seconds from a monotonic clock; tests pass a fake one.
        max_cache_bytes: bound on the cache entries' total size.
    """

    def __init__(
        self,
        *,
        timeout: float = 0.1,
        key_prefix: str = "toolkit",
        meter_provider: metrics.MeterProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
    ) -> None:
        super().__init__(
            timeout=timeout, key_prefix=key_prefix, meter_provider=meter_provider, clock=clock
        )
        self._init_rate_limits()
        self._init_cache(max_cache_bytes)
        self._init_leases()
        self._init_breakers()
        self._init_flags()
