"""Rate limits on Redis: GCRA in one script call (``lua/gcra.lua``), and `limits`'s Redis
storages for its strategies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from toolkit.backends._gcra import GcraLimit, GcraResult
from toolkit.backends.redis._core import NO_DRIVER_TIMEOUTS, RedisCore

if TYPE_CHECKING:
    from limits.aio.storage import Storage


class RedisRateLimits(RedisCore):
    """A theoretical arrival time per key, on the server's clock."""

    _limits_storage: Storage | None = None

    def _init_rate_limits(self) -> None:
        self._gcra_script = self._script("gcra")

    async def gcra(self, keys: Sequence[str], limits: Sequence[GcraLimit], cost: int) -> GcraResult:
        args: list[int] = [cost]
        for limit in limits:
            args += [limit.interval_us, limit.period_us]
        full_keys = [self.key(k) for k in keys]
        reply = await self.call(
            "ratelimit.gcra", lambda: self._gcra_script(keys=full_keys, args=args)
        )
        return GcraResult.from_reply(reply)

    def limits_storage(self) -> Storage:
        if self._limits_storage is None:
            from limits.aio.storage import RedisClusterStorage, RedisStorage

            prefix = self.key("limits")
            if self._cluster:
                self._limits_storage = RedisClusterStorage(
                    "async+redis+cluster://" + self.url.removeprefix("redis+cluster://"),
                    implementation="redispy",
                    key_prefix=prefix,
                    wrap_exceptions=True,
                    **NO_DRIVER_TIMEOUTS,
                )
            else:
                self._limits_storage = RedisStorage(
                    "async+" + self.url,
                    implementation="redispy",
                    connection_pool=self._pool,  # type: ignore[arg-type]
                    key_prefix=prefix,
                    wrap_exceptions=True,
                )
        return self._limits_storage

    async def close(self) -> None:
        await super().close()
        if self._pool is None and self._limits_storage is not None:
            # On a cluster `limits` keeps a client of its own (it cannot share ours); the
            # library has no close method, so close the client its bridge holds.
            client = getattr(getattr(self._limits_storage, "bridge", None), "storage", None)
            if client is not None:
                await client.aclose()
