"""How one key of a pool lends: the interface both lending strategies implement.

AgentPool keeps one :class:`KeyLender` per key and never asks which mode it is in. An acquire
takes a permit (``gate``), then calls :meth:`~KeyLender.take`, which lends at once or returns
None, without awaiting: the fast path. Only then does :meth:`~KeyLender.checkout` run, with the
permit held, and it may wait for a health check or a build. :meth:`~KeyLender.checkin` takes
the object back and gives the permit back. Two strategies: ``_exclusive.ExclusiveLender`` (an
object per caller) and ``_shared.SharedLender`` (one object per key, used by every caller).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from toolkit._deadlines import own_deadline
from toolkit.pool._entry import Entry
from toolkit.pool._gate import Gate
from toolkit.pool._objects import Objects

T = TypeVar("T")


class Permit:
    """Whether the acquiring caller still holds its permit (a build may take it over)."""

    __slots__ = ("held",)

    def __init__(self, held: bool) -> None:
        self.held = held


class KeyLender(ABC, Generic[T]):
    """One key of a pool: its permits, its builds, and how it lends its objects.

    ``gate`` holds the key's ``size`` permits; ``creating`` counts its builds running;
    ``last_used`` is when it was last acquired (the least recently used idle key is evicted
    first)."""

    __slots__ = ("creating", "gate", "key", "last_used", "objects")

    def __init__(self, objects: Objects[T], key: Hashable, now: float) -> None:
        self.objects = objects
        self.key = key
        self.gate = Gate(objects.options.size)
        self.creating = 0
        self.last_used = now

    @abstractmethod
    def take(self) -> Entry[T] | None:
        """With a permit just taken: an object to lend now, without awaiting, or None when
        :meth:`checkout` has to run."""

    @abstractmethod
    async def checkout(self, deadline: float, permit: Permit) -> Entry[T]:
        """With a permit held: an object, waiting for a check or a build until ``deadline``
        (the pool's clock). Raises PoolTimeoutError past it. Sets ``permit.held`` to False
        when it hands the permit to a build it leaves running."""

    @abstractmethod
    async def checkin(self, entry: Entry[T], exc: BaseException | None) -> None:
        """Take back an object this key lent (``exc``: what the caller's block raised) and
        give its permit back."""

    @abstractmethod
    def warm(self, count: int) -> list[asyncio.Task[Entry[T]]]:
        """Start building ``count`` objects ahead; the builds to wait for."""

    @abstractmethod
    def drain(self, reason: str) -> None:
        """Close the objects nobody holds, for ``reason`` (the pool closes, the key is
        evicted); held ones are closed when given back."""

    @abstractmethod
    def counts(self) -> tuple[int, int]:
        """Objects ``(idle, used)``, as :class:`~toolkit.pool.PoolStats` counts them."""

    def busy(self) -> bool:
        """Anything held, queued or being built: a key that may not be evicted."""
        gate = self.gate
        return bool(gate.free != gate.size or gate.waiters or self.creating)

    def spawn_build(self) -> asyncio.Task[Entry[T]]:
        """Build an object in a task the pool owns, bounded by ``create_timeout`` (the task
        is the pool's own, so the timeout can only cancel the factory). The build outlives a
        caller that stops waiting (at its acquire's end or its deadline) and lands for the
        next one, so ``create_timeout`` is its deadline, in place of its caller's: the
        toolkit waits inside the factory fit in it."""
        self.creating += 1  # before the task runs: counted from the moment it exists
        return self.objects.spawn(self._build(), "build")

    async def _build(self) -> Entry[T]:
        objects = self.objects
        create_timeout = objects.options.settings.create_timeout
        try:
            with own_deadline(create_timeout):
                try:
                    async with asyncio.timeout(create_timeout) as scope:
                        obj = await objects.make(self.key)
                except TimeoutError as exc:
                    if scope.expired():  # not the factory's own TimeoutError
                        raise objects.build_timed_out(self.key) from exc
                    raise
            return objects.entry(obj, self.key)
        finally:
            self.creating -= 1


async def finished(future: asyncio.Future[Any], within: float) -> bool:
    """Whether ``future`` finished within ``within`` seconds; it is never cancelled here."""
    if not future.done() and within > 0:
        await asyncio.wait((future,), timeout=within)
    return future.done()
