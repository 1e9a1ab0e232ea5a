"""Flag overrides, their history and the declarations, in this process."""

from __future__ import annotations

import collections
import itertools
import json
import time
from typing import Any

from toolkit.backends.memory._core import MemoryCore


class MemoryFlags(MemoryCore):
    """Overrides by flag key; change records newest first, as ``lua/flags_save.lua`` keeps
    them."""

    def _init_flags(self) -> None:
        self._flags: dict[str, str] = {}
        self._history: collections.deque[dict[str, Any]] = collections.deque()
        self._declared: dict[str, str] = {}

    async def flags_load(self) -> dict[str, str]:
        return dict(self._flags)

    async def flags_save(
        self,
        key: str,
        state: str | None,
        change: dict[str, Any],
        *,
        channel: str,
        history_length: int,
    ) -> None:
        old = self._flags.pop(key, None) if state is None else self._flags.get(key)
        if state is not None:
            self._flags[key] = state
        record = {**change, "at": time.time()}
        if old is not None:
            record["old"] = json.loads(old)
        history = self._history
        history.appendleft(record)
        while len(history) > history_length:
            history.pop()
        await self.publish(channel, key)

    async def flags_history(self, limit: int) -> list[dict[str, Any]]:
        return list(itertools.islice(self._history, limit))

    async def flags_declare(self, definitions: dict[str, str]) -> None:
        self._declared.update(definitions)

    async def flags_declared(self) -> dict[str, str]:
        return dict(self._declared)
