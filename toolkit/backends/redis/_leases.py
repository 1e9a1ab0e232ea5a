"""Leases on Redis: ``SET NX PX`` to take one, scripts to renew and release it by token."""

from __future__ import annotations

from toolkit.backends.redis._core import RedisCore


class RedisLeases(RedisCore):
    """A lease is a key holding its token, expiring with the lease."""

    def _init_leases(self) -> None:
        self._lease_renew_script = self._script("lease_renew")
        self._lease_release_script = self._script("lease_release")

    async def lease_acquire(self, key: str, token: str, ttl: float) -> bool:
        ms = max(1, round(ttl * 1000))
        taken = await self.call(
            "lease.acquire", lambda: self._client.set(self.key(key), token, nx=True, px=ms)
        )
        return bool(taken)

    async def lease_renew(self, key: str, token: str, ttl: float) -> bool:
        ms = max(1, round(ttl * 1000))
        renewed = await self.call(
            "lease.renew", lambda: self._lease_renew_script(keys=[self.key(key)], args=[token, ms])
        )
        return bool(renewed)

    async def lease_release(self, key: str, token: str) -> None:
        await self.call(
            "lease.release", lambda: self._lease_release_script(keys=[self.key(key)], args=[token])
        )

    async def lease_held(self, key: str) -> bool:
        return bool(await self.call("lease.held", lambda: self._client.exists(self.key(key))))
