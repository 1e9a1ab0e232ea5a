"""The embedded backend: state in this process's memory, for a single instance."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, TypeVar

from opentelemetry import metrics

from toolkit.backends import _gcra
from toolkit.backends._gcra import GcraLimit, GcraResult
from toolkit.backends.base import Backend

if TYPE_CHECKING:
    from limits.aio.storage import Storage

T = TypeVar("T")

_MIN_SWEEP_SIZE = 1024


class MemoryBackend(Backend):
    """State in a dict in this process. Operations run without awaiting, so each is atomic
    under asyncio; nothing can fail, so the call guard adds nothing.

    Args:
        clock: seconds from a monotonic clock; tests pass a fake one.
    """

    name: ClassVar[str] = "memory"

    def __init__(
        self,
        *,
        timeout: float = 0.1,
        key_prefix: str = "toolkit",
        meter_provider: metrics.MeterProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(timeout=timeout, key_prefix=key_prefix, meter_provider=meter_provider)
        self._clock = clock
        self._tats: dict[str, int] = {}
        self._sweep_at = _MIN_SWEEP_SIZE
        self._limits_storage: Storage | None = None

    async def gcra(self, keys: Sequence[str], limits: Sequence[GcraLimit], cost: int) -> GcraResult:
        now = int(self._clock() * _gcra.MICROSECONDS)
        full_keys = [f"{self.key_prefix}:{k}" for k in keys]
        result, new_tats = _gcra.decide(now, [self._tats.get(k) for k in full_keys], limits, cost)
        if result.allowed:
            self._tats.update(zip(full_keys, new_tats, strict=True))
            if len(self._tats) >= self._sweep_at:
                self._sweep(now)
        return result

    def _sweep(self, now: int) -> None:
        # A TAT in the past carries no state; dropping them keeps memory bounded by the keys
        # active within one period. Sweeping at doubling sizes keeps the cost O(1) amortised.
        self._tats = {k: tat for k, tat in self._tats.items() if tat > now}
        self._sweep_at = max(_MIN_SWEEP_SIZE, 2 * len(self._tats))

    def limits_storage(self) -> Storage:
        if self._limits_storage is None:
            from limits.aio.storage import MemoryStorage

            self._limits_storage = MemoryStorage()
        return self._limits_storage

    async def call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        del operation
        return await fn()
