"""The memory backend's core: the clock, pub/sub between the tasks of this process, and a
call guard with nothing to guard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ClassVar, TypeVar

from opentelemetry import metrics

from toolkit.backends.base import BackendCore

T = TypeVar("T")


class MemoryCore(BackendCore):
    """The clock, pub/sub and call guard every in-process capability goes through
    (arguments: see :class:`~toolkit.backends.memory.MemoryBackend`)."""

    name: ClassVar[str] = "memory"
    in_process: ClassVar[bool] = True

    def __init__(
        self,
        *,
        timeout: float,
        key_prefix: str,
        meter_provider: metrics.MeterProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(timeout=timeout, key_prefix=key_prefix, meter_provider=meter_provider)
        self._clock = clock
        self._listeners: dict[str, set[asyncio.Queue[str]]] = {}

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

    async def call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        del operation
        return await fn()
