"""Flag overrides, their history and the declarations on Redis, under one ``{flags}`` tag."""

from __future__ import annotations

import json
from typing import Any

from toolkit.backends.redis._core import RedisCore


class RedisFlags(RedisCore):
    """A hash of overrides, a list of change records (newest first) and a hash of
    declarations; a save is one script call (``lua/flags_save.lua``)."""

    def _init_flags(self) -> None:
        self._flags_save_script = self._script("flags_save")
        # Overrides and their history share one {hash tag}: the save script runs on a cluster.
        self._flags_key = self.key("{flags}", "state")
        self._history_key = self.key("{flags}", "history")
        self._declared_key = self.key("{flags}", "declared")

    async def flags_load(self) -> dict[str, str]:
        stored = await self.call("flags.load", lambda: self._client.hgetall(self._flags_key))
        return {k.decode(): v.decode() for k, v in stored.items()}

    async def flags_save(
        self,
        key: str,
        state: str | None,
        change: dict[str, Any],
        *,
        channel: str,
        history_length: int,
    ) -> None:
        keys = [self._flags_key, self._history_key]
        args: list[str | int] = [
            key,
            state or "",
            json.dumps(change),
            self.key(channel),
            history_length,
        ]
        await self.call("flags.save", lambda: self._flags_save_script(keys=keys, args=args))

    async def flags_history(self, limit: int) -> list[dict[str, Any]]:
        records = await self.call(
            "flags.history", lambda: self._client.lrange(self._history_key, 0, limit - 1)
        )
        return [json.loads(record) for record in records]

    async def flags_declare(self, definitions: dict[str, str]) -> None:
        if definitions:
            await self.call(
                "flags.declare", lambda: self._client.hset(self._declared_key, mapping=definitions)
            )

    async def flags_declared(self) -> dict[str, str]:
        stored = await self.call("flags.declared", lambda: self._client.hgetall(self._declared_key))
        return {k.decode(): v.decode() for k, v in stored.items()}
