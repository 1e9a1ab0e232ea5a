"""Shared lending: one object per key, used by every caller at once (or by ``size`` at most).

The key's object (``current``) is built by one build however many callers arrive together
(single flight). Nothing that keeps it good holds a caller: when it is worn, its replacement
is built while it goes on being lent; a health check that is due runs beside the callers; a
failed check, or an error ``discard_on`` accepts, retires it (lent no more, closed when its
last holder leaves) and the next caller gets a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import TypeVar

from toolkit.pool._entry import Entry
from toolkit.pool._lending import KeyLender, Permit, finished
from toolkit.pool._objects import Objects
from toolkit.telemetry import names

T = TypeVar("T")


class SharedLender(KeyLender[T]):
    """One key of a shared pool: ``current``, the object lent; ``building``, its build or
    its replacement's (at most one at a time); ``retiring``, retired objects still held (each
    counted as used until its last holder leaves)."""

    __slots__ = ("building", "current", "retiring")

    def __init__(self, objects: Objects[T], key: Hashable, now: float) -> None:
        super().__init__(objects, key, now)
        self.current: Entry[T] | None = None
        self.building: asyncio.Task[Entry[T]] | None = None
        self.retiring = 0

    def take(self) -> Entry[T] | None:
        """Lend the key's object, if it has one: a worn one goes on being lent while its
        replacement is built, and a check that is due runs beside the callers."""
        entry = self.current
        if entry is None:
            return None
        objects = self.objects
        if entry.worn(objects.clock()):
            if self.building is None and not objects.closed:
                self._build_once()  # lands as the key's object, retiring this one
        elif objects.check_due(entry) and not entry.checking:
            entry.checking = True
            objects.spawn(self._check(entry), "check")
        entry.uses_left -= 1
        entry.holders += 1
        return entry

    async def checkout(self, deadline: float, permit: Permit) -> Entry[T]:
        """The key's object, waiting for its build (which needs no permit: ``permit`` stays
        held by the caller)."""
        objects = self.objects
        while True:
            if objects.closed:
                raise objects.closed_error()
            entry = self.take()
            if entry is not None:
                return entry
            task = self._build_once()
            if not await finished(task, deadline - objects.clock()):
                # The build goes on and lands as the key's object.
                raise objects.timed_out("building an object")
            # A build that has just ended may not have landed yet (done callbacks run on a
            # later turn of the loop); land it now, or this loop would spin, never awaiting.
            self._landed(task)
            if task.cancelled():
                raise objects.closed_error()
            task.result()  # the factory's exception reaches the caller

    async def checkin(self, entry: Entry[T], exc: BaseException | None) -> None:
        """Leave the object to its other holders; retire it if ``discard_on`` accepts
        ``exc``, close it if it is retired and this was its last holder."""
        entry.holders -= 1
        if exc is not None and not entry.retired and self.objects.options.discard_on(exc):
            self._retire(entry, names.POOL_DISCARD_ERROR)  # closed now if nobody else holds it
        elif entry.retired and entry.holders == 0:
            self.retiring -= 1
            self.objects.close_later(entry, entry.reason)
        self.gate.leave()

    def warm(self, count: int) -> list[asyncio.Task[Entry[T]]]:
        """The key's one object, whatever ``count``."""
        del count
        return [self._build_once()]

    def drain(self, reason: str) -> None:
        if self.current is not None:
            self._retire(self.current, reason)

    def counts(self) -> tuple[int, int]:
        entry = self.current
        if entry is None:
            return 0, self.retiring
        if entry.holders:
            return 0, 1 + self.retiring
        return 1, self.retiring

    def busy(self) -> bool:
        entry = self.current
        return (
            super().busy()
            or self.building is not None
            or bool(self.retiring)
            or (entry is not None and bool(entry.holders))
        )

    def _retire(self, entry: Entry[T], reason: str) -> None:
        """Lend this object no more; close it once nobody holds it."""
        if entry.retired:
            return
        entry.retired = True
        entry.reason = reason
        if self.current is entry:
            self.current = None
        if entry.holders == 0:
            self.objects.close_later(entry, reason)
        else:
            self.retiring += 1

    def _build_once(self) -> asyncio.Task[Entry[T]]:
        """The one build of the key's object (single flight): the running one, or a new one
        whose object becomes ``current`` (retiring the one it replaces)."""
        if self.building is not None:
            return self.building
        task = self.building = self.spawn_build()
        task.add_done_callback(self._landed)
        return task

    def _landed(self, task: asyncio.Task[Entry[T]]) -> None:
        """The build's object becomes ``current``; once per build (its done callback, or
        :meth:`checkout` first)."""
        if self.building is not task:
            return
        self.building = None
        if task.cancelled():
            return
        objects = self.objects
        exc = task.exception()
        if exc is not None:
            objects.build_failed(self.key, exc)
            return
        entry = task.result()
        if objects.closed:
            entry.retired = True
            objects.close_later(entry, names.POOL_DISCARD_CLOSED)
            return
        if self.current is not None:  # a replacement: the worn object is lent no more
            self._retire(self.current, names.POOL_DISCARD_RECYCLED)
        self.current = entry

    async def _check(self, entry: Entry[T]) -> None:
        """In the background: check the key's object; if it fails, lend it no more and
        build its replacement."""
        objects = self.objects
        try:
            if await objects.passes(entry, objects.options.settings.acquire_timeout):
                entry.good_at = objects.clock()
            elif not entry.retired:
                self._retire(entry, names.POOL_DISCARD_UNHEALTHY)
                if not objects.closed:
                    self._build_once()
        finally:
            entry.checking = False
