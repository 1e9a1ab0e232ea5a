"""Circuit breakers in this process: a :class:`BreakerTable`, transitions announced."""

from __future__ import annotations

from toolkit.backends.breaker_state import BreakerConfig, BreakerTable, BreakerView, breaker_message
from toolkit.backends.memory._core import MemoryCore


class MemoryBreakers(MemoryCore):
    """Every breaker's state in one :class:`BreakerTable`; an operation that changes the
    generation announces the transition, as the scripts do."""

    def _init_breakers(self) -> None:
        self._breakers = BreakerTable()

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
        return await self._announce(config.channel, name, before, view)

    async def breaker_acquire_probe(
        self, name: str, now_ms: int, token: str, config: BreakerConfig
    ) -> BreakerView:
        before = self._breakers.read(name).generation
        view = self._breakers.acquire_probe(name, now_ms, token, config)
        return await self._announce(config.channel, name, before, view)

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
        return await self._announce(config.channel, name, before, view)

    async def breaker_force(self, name: str, forced: str, *, channel: str) -> BreakerView:
        return await self._announce(channel, name, -1, self._breakers.force(name, forced))

    async def breaker_read(self, name: str) -> BreakerView:
        return self._breakers.read(name)

    async def _announce(
        self, channel: str, name: str, before: int, view: BreakerView
    ) -> BreakerView:
        if view.generation != before:
            await self.publish(channel, breaker_message(name, view))
        return view
