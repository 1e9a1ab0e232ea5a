"""Rate limits in this process: GCRA step for step as ``lua/gcra.lua``, and `limits`'s own
memory storage for its strategies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from toolkit.backends._gcra import MICROSECONDS, GcraLimit, GcraResult
from toolkit.backends.memory._core import MemoryCore

if TYPE_CHECKING:
    from limits.aio.storage import Storage

_MIN_SWEEP_SIZE = 1024
# A NamedTuple's own __new__ is a Python function; tuple's builds the same result, per request.
_new = tuple.__new__


class MemoryRateLimits(MemoryCore):
    """Theoretical arrival times by key, swept of those in the past as the table grows."""

    _limits_storage: Storage | None = None

    def _init_rate_limits(self) -> None:
        self._tats: dict[str, int] = {}
        self._sweep_at = _MIN_SWEEP_SIZE

    async def gcra(self, keys: Sequence[str], limits: Sequence[GcraLimit], cost: int) -> GcraResult:
        return self.gcra_now(keys, limits, cost)

    def gcra_now(self, keys: Sequence[str], limits: Sequence[GcraLimit], cost: int) -> GcraResult:
        """:meth:`gcra` without awaiting: nothing in it awaits, so it is atomic under asyncio
        (the rate limiter calls it on every request, without a coroutine)."""
        # Step for step the arithmetic of lua/gcra.lua, in plain loops.
        # Keys are this table's own: unprefixed, since no other user shares it.
        now = int(self._clock() * MICROSECONDS)
        tats = self._tats
        if len(keys) == 1:  # one limit, the usual policy: the loops below, unrolled
            limit = limits[0]
            full_key = keys[0]
            tat = tats.get(full_key, now)
            if tat < now:
                tat = now
            new_tat = tat + cost * limit.interval_us
            if new_tat - now > limit.period_us:
                left = max(0, (limit.period_us - (tat - now)) // limit.interval_us)
                retry = (new_tat - limit.period_us - now) / MICROSECONDS
                return _new(GcraResult, (False, retry, (left,), ((tat - now) / MICROSECONDS,)))
            tats[full_key] = new_tat
            if len(tats) >= self._sweep_at:
                self._sweep(now)
            left = max(0, (limit.period_us - (new_tat - now)) // limit.interval_us)
            return _new(GcraResult, (True, 0.0, (left,), ((new_tat - now) / MICROSECONDS,)))
        allowed = True
        retry_after = 0
        plan = []
        for full_key, limit in zip(keys, limits, strict=True):
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

    def limits_storage(self) -> Storage:
        if self._limits_storage is None:
            from limits.aio.storage import MemoryStorage

            self._limits_storage = MemoryStorage()
        return self._limits_storage
