"""Where a CircuitBreaker's state is read and written: its backend, and, while a shared backend
fails, a table in this process that answers in its place, fed the same counts and starting
from the fleet's last known state, so that the breaker goes on deciding and never raises a
backend error into a call. The next backend call that succeeds brings the fleet's state back.
"""

from __future__ import annotations

from toolkit.backends import BreakerStorage
from toolkit.backends.breaker_state import PROBE_FAILURE, BreakerConfig, BreakerTable, BreakerView
from toolkit.errors import BackendError


class BreakerStore:
    """One breaker's storage operations, each answering ``(view, local)``: ``local`` when the
    backend failed and the in-process table answered.

    Args:
        name: the breaker's name.
        backend: where the state lives; an in-process one needs no fallback of its own.
        config: the breaker's parameters, given to every operation.
    """

    __slots__ = ("_local", "backend", "config", "name", "shared")

    def __init__(self, name: str, backend: BreakerStorage, config: BreakerConfig) -> None:
        self.name = name
        self.backend = backend
        self.config = config
        self.shared = not backend.in_process
        self._local = BreakerTable()

    def adopt(self, view: BreakerView) -> None:
        """Keep ``view``, which the fleet agreed on, as where the fallback would start."""
        self._local.adopt(self.name, view)

    async def read(self) -> tuple[BreakerView, bool]:
        try:
            return await self.backend.breaker_read(self.name), False
        except BackendError:
            return self._local.read(self.name), True

    async def record(
        self, now_ms: int, ok: int, failed: int, slow: int, trip: bool
    ) -> tuple[BreakerView, bool]:
        """Add outcomes to the window (``trip``: the count-based window tripped)."""
        if self.shared:  # counted here too, for the fallback to decide from if needed
            self._local.record(self.name, now_ms, ok, failed, slow, trip, self.config)
        try:
            view = await self.backend.breaker_record(
                self.name, now_ms, ok, failed, slow, trip, self.config
            )
        except BackendError:
            return self._local.read(self.name), True
        return view, False

    async def acquire_probe(self, token: str, now_ms: int) -> tuple[BreakerView, bool]:
        try:
            view = await self.backend.breaker_acquire_probe(self.name, now_ms, token, self.config)
        except BackendError:
            return self._local.acquire_probe(self.name, now_ms, token, self.config), True
        return view, False

    async def release_probe(
        self, token: str, generation: int, outcome: str, now_ms: int, *, local: bool
    ) -> tuple[BreakerView, bool]:
        """Give back a probe permit with its outcome; ``local``: the table granted it."""
        if local:
            view = self._local.release_probe(
                self.name, now_ms, token, generation, outcome, self.config
            )
            return view, True
        try:
            view = await self.backend.breaker_release_probe(
                self.name, now_ms, token, generation, outcome, self.config
            )
        except BackendError:
            if outcome == PROBE_FAILURE:
                self._local.record(self.name, now_ms, 0, 0, 0, True, self.config)
            return self._local.read(self.name), True
        return view, False

    async def force(self, forced: str) -> BreakerView:
        """Set an operator's override for the fleet (a BackendError when it did not reach it:
        see :meth:`force_locally`)."""
        return await self.backend.breaker_force(self.name, forced, channel=self.config.channel)

    def force_locally(self, forced: str) -> BreakerView:
        """Set an operator's override in the local table only."""
        return self._local.force(self.name, forced)
