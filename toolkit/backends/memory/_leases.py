"""Leases in this process: token and expiry by key, on the backend's clock."""

from __future__ import annotations

from toolkit.backends.memory._core import MemoryCore


class MemoryLeases(MemoryCore):
    """``(token, expires)`` by lease key; an expired lease is free."""

    def _init_leases(self) -> None:
        self._leases: dict[str, tuple[str, float]] = {}

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
